/**
 * Gatehouse's FastCGI listeners (`fastcgi_listen`, docs/fastcgi.md): a GatewayListeners of
 * FastCGI servers, so `fastcgi_pass` from nginx reaches every route.
 */
import type { Logger } from 'pino'
import { createFastCGIServer, type FastCGIServer, type RequestListener } from './server.js'
import { GatewayListeners } from '../../inbound/listeners.js'

export function fastcgiListeners(handler: RequestListener, log: Logger): GatewayListeners<FastCGIServer> {
  return new GatewayListeners<FastCGIServer>(
    {
      name: 'FastCGI',
      key: 'fastcgi_listen',
      addresses: (config) => config.fastcgi_listen,
      create: (config) =>
        createFastCGIServer(handler, {
          allow: config.fastcgi_allow,
          maxParamsBytes: config.fastcgi_max_params_bytes,
          headerTimeout: config.limits.header_timeout,
          idleTimeout: config.fastcgi_idle_timeout,
          ...(config.fastcgi_max_connections !== undefined
            ? { maxConnections: config.fastcgi_max_connections }
            : {}),
          log,
        }),
      apply(server, config) {
        server.setAllow(config.fastcgi_allow)
        server.maxParamsBytes = config.fastcgi_max_params_bytes
        server.headerTimeout = config.limits.header_timeout
        server.idleTimeout = config.fastcgi_idle_timeout
        server.maxConnections = config.fastcgi_max_connections ?? Number.POSITIVE_INFINITY
      },
    },
    log,
  )
}
