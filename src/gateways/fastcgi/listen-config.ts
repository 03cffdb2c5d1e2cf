import { z } from 'zod'
import { allowList, listenAddresses } from '../../core/schema/listen.js'
import {
  DEFAULT_FASTCGI_ALLOW,
  FASTCGI_DEFAULT_MAX_PARAMS_BYTES,
  FASTCGI_MAX_PARAMS_BYTES,
} from './server.js'
import { duration, size } from '../../core/schema/units.js'

/** Top-level keys for the FastCGI listeners (docs/fastcgi.md), spread into the config schema. */
export function fastcgiListenerShape() {
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
    /** Connections at once per listener (announced as FCGI_MAX_CONNS); unset: no limit. */
    fastcgi_max_connections: z.number().int().min(1).max(1_000_000).optional(),
  }
}
