/**
 * Gatehouse's FastCGI listeners (`fastcgi_listen`, docs/fastcgi.md): FastCGI servers in
 * front of every route, so that `fastcgi_pass` from nginx reaches them all.
 */
import { z } from 'zod'
import { allowList, listenAddresses } from '../../core/schema/listen.js'
import { duration, size } from '../../core/schema/units.js'
import type { ListenerDefinition } from '../../core/types.js'
import {
  createFastCGIServer,
  DEFAULT_FASTCGI_ALLOW,
  FASTCGI_DEFAULT_MAX_PARAMS_BYTES,
  FASTCGI_MAX_PARAMS_BYTES,
  type FastCGIServer,
} from './server.js'

/** Top-level keys for the FastCGI listeners (docs/fastcgi.md), spread into the config schema. */
function fastcgiListenerShape() {
  return {
    fastcgi_listen: listenAddresses(),
    fastcgi_allow: allowList(DEFAULT_FASTCGI_ALLOW),
    fastcgi_max_params_bytes: size
      .prefault(FASTCGI_DEFAULT_MAX_PARAMS_BYTES)
      .refine(
        (n) => n >= 64 && n <= FASTCGI_MAX_PARAMS_BYTES,
        `must be between 64 and ${FASTCGI_MAX_PARAMS_BYTES} bytes`,
      ),
    /** A kept-alive FastCGI connection with no request is closed after this (0: never). */
    fastcgi_idle_timeout: duration.prefault(75),
    /** Time allowed between two STDIN records of a request body (0: no limit); past it, 408. */
    fastcgi_body_timeout: duration.prefault(60),
    /** Connections at once per listener (announced as FCGI_MAX_CONNS); unset: no limit. */
    fastcgi_max_connections: z.number().int().min(1).max(1_000_000).optional(),
  }
}

export const fastcgiListener: ListenerDefinition<ReturnType<typeof fastcgiListenerShape>, FastCGIServer> = {
  label: 'FastCGI',
  key: 'fastcgi_listen',
  shape: fastcgiListenerShape,
  addresses: (config) => config.fastcgi_listen,
  create: (handler, config, log) =>
    createFastCGIServer(handler, {
      allow: config.fastcgi_allow,
      maxParamsBytes: config.fastcgi_max_params_bytes,
      headerTimeout: config.limits.header_timeout,
      idleTimeout: config.fastcgi_idle_timeout,
      bodyTimeout: config.fastcgi_body_timeout,
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
    server.bodyTimeout = config.fastcgi_body_timeout
    server.maxConnections = config.fastcgi_max_connections ?? Number.POSITIVE_INFINITY
  },
  stats: (server) => ({ connections: server.connectionsAccepted, requests: server.requestsStarted }),
}
