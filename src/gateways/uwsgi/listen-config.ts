import { allowList, listenAddresses } from '../../core/schema/listen.js'
import { UWSGI_MAX_VARS_BYTES } from './codec.js'
import { DEFAULT_UWSGI_ALLOW } from './server.js'
import { size } from '../../core/schema/units.js'

/** Top-level keys for the uwsgi listeners (docs/uwsgi.md), spread into the config schema. */
export function uwsgiListenerShape() {
  return {
    uwsgi_listen: listenAddresses(),
    uwsgi_allow: allowList(DEFAULT_UWSGI_ALLOW),
    uwsgi_max_vars_bytes: size
      .prefault(UWSGI_MAX_VARS_BYTES)
      .refine(
        (n) => n >= 4 && n <= UWSGI_MAX_VARS_BYTES,
        `must be between 4 and ${UWSGI_MAX_VARS_BYTES} bytes`,
      ),
  }
}
