/**
 * Gatehouse's uwsgi listeners (`uwsgi_listen`, docs/uwsgi.md): uwsgi servers in front of
 * every route, so that `uwsgi_pass` from nginx reaches them all.
 */
import { allowList, listenAddresses } from '../../core/schema/listen.js'
import { duration, size } from '../../core/schema/units.js'
import type { ListenerDefinition } from '../../core/types.js'
import { UWSGI_MAX_VARS_BYTES } from './codec.js'
import { createUwsgiServer, DEFAULT_UWSGI_ALLOW, type UwsgiServer } from './server.js'

/** Top-level keys for the uwsgi listeners (docs/uwsgi.md), spread into the config schema. */
function uwsgiListenerShape() {
  return {
    uwsgi_listen: listenAddresses(),
    uwsgi_allow: allowList(DEFAULT_UWSGI_ALLOW),
    uwsgi_max_vars_bytes: size
      .prefault(UWSGI_MAX_VARS_BYTES)
      .refine(
        (n) => n >= 4 && n <= UWSGI_MAX_VARS_BYTES,
        `must be between 4 and ${UWSGI_MAX_VARS_BYTES} bytes`,
      ),
    /** Time allowed between two reads of a request body (0: no limit); past it, 408. */
    uwsgi_body_timeout: duration.prefault(60),
  }
}

export const uwsgiListener: ListenerDefinition<ReturnType<typeof uwsgiListenerShape>, UwsgiServer> = {
  label: 'uwsgi',
  key: 'uwsgi_listen',
  shape: uwsgiListenerShape,
  addresses: (config) => config.uwsgi_listen,
  create: (handler, config, log) =>
    createUwsgiServer(handler, {
      allow: config.uwsgi_allow,
      maxVarsBytes: config.uwsgi_max_vars_bytes,
      headerTimeout: config.limits.header_timeout,
      bodyTimeout: config.uwsgi_body_timeout,
      log,
    }),
  apply(server, config) {
    server.setAllow(config.uwsgi_allow)
    server.maxVarsBytes = config.uwsgi_max_vars_bytes
    server.headerTimeout = config.limits.header_timeout
    server.bodyTimeout = config.uwsgi_body_timeout
  },
}
