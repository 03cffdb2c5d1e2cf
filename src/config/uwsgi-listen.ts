import { z } from 'zod'
import { UWSGI_MAX_VARS_BYTES } from '../protocol/uwsgi.js'
import { parseListenAddress } from '../server/listen-address.js'
import { DEFAULT_UWSGI_ALLOW, parseAllowList } from '../server/uwsgi-server.js'
import { size } from './units.js'

const LISTEN = z.string().superRefine((value, ctx) => {
  try {
    parseListenAddress(value)
  } catch (err) {
    ctx.addIssue({ code: 'custom', message: (err as Error).message })
  }
})

const ALLOW_ENTRY = z.string().superRefine((value, ctx) => {
  try {
    parseAllowList([value])
  } catch (err) {
    ctx.addIssue({ code: 'custom', message: (err as Error).message })
  }
})

/** Top-level keys for the uwsgi listeners (docs/uwsgi.md), spread into the config schema. */
export function uwsgiListenerShape() {
  return {
    uwsgi_listen: z
      .union([LISTEN, z.array(LISTEN)])
      .transform((v) => (Array.isArray(v) ? v : [v]))
      .default([]),
    uwsgi_allow: z.array(ALLOW_ENTRY).default([...DEFAULT_UWSGI_ALLOW]),
    uwsgi_max_vars_bytes: size
      .prefault(UWSGI_MAX_VARS_BYTES)
      .refine(
        (n) => n >= 4 && n <= UWSGI_MAX_VARS_BYTES,
        `must be between 4 and ${UWSGI_MAX_VARS_BYTES} bytes`,
      ),
  }
}
