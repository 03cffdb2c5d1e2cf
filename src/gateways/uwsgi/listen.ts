/**
 * Gatehouse's uwsgi listeners (`uwsgi_listen`, docs/uwsgi.md): a GatewayListeners of uwsgi
 * servers, so `uwsgi_pass` from nginx reaches every route.
 */
import type { Logger } from 'pino'
import { GatewayListeners } from '../../inbound/listeners.js'
import { createUwsgiServer, type RequestListener, type UwsgiServer } from './server.js'

export type { BoundAddress } from '../../core/bind.js'

export function uwsgiListeners(handler: RequestListener, log: Logger): GatewayListeners<UwsgiServer> {
  return new GatewayListeners<UwsgiServer>(
    {
      name: 'uwsgi',
      key: 'uwsgi_listen',
      addresses: (config) => config.uwsgi_listen,
      create: (config) =>
        createUwsgiServer(handler, {
          allow: config.uwsgi_allow,
          maxVarsBytes: config.uwsgi_max_vars_bytes,
          headerTimeout: config.limits.header_timeout,
          log,
        }),
      apply(server, config) {
        server.setAllow(config.uwsgi_allow)
        server.maxVarsBytes = config.uwsgi_max_vars_bytes
        server.headerTimeout = config.limits.header_timeout
      },
    },
    log,
  )
}
