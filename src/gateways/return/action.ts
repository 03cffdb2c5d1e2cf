import { z } from 'zod'
import { strictObject } from '../../core/schema/strict.js'
import type { ActionDefinition, RequestContext } from '../../core/types.js'

/** `{host}`, `{request_uri}`, ... in `location` and `body`, like nginx's `$host$request_uri`. */
const PLACEHOLDERS = ['host', 'request_uri', 'path', 'query', 'scheme', 'method', 'remote_addr'] as const
type Placeholder = (typeof PLACEHOLDERS)[number]
const PLACEHOLDER_RE = /\{([a-z_]+)\}/g
const HAS_PLACEHOLDER = /\{[a-z_]+\}/

function placeholderValue(ctx: RequestContext, name: Placeholder): string {
  switch (name) {
    case 'host':
      return ctx.req.headers.host ?? ctx.host
    case 'request_uri':
      return ctx.query ? `${ctx.rawPath}?${ctx.query}` : ctx.rawPath
    case 'path':
      return ctx.rawPath
    case 'query':
      return ctx.query
    case 'scheme':
      return ctx.scheme
    case 'method':
      return ctx.method
    case 'remote_addr':
      return ctx.conn.remoteAddress
  }
}

/** Compiles a template once; a template with no placeholder is a constant. */
function compileTemplate(template: string): (ctx: RequestContext) => string {
  if (!HAS_PLACEHOLDER.test(template)) return () => template
  return (ctx) =>
    template.replace(PLACEHOLDER_RE, (whole, name: string) =>
      (PLACEHOLDERS as readonly string[]).includes(name) ? placeholderValue(ctx, name as Placeholder) : whole,
    )
}

const returnSchema = () =>
  strictObject({
    status: z.number().int().min(200).max(599).default(200),
    body: z.string().optional(),
    location: z.string().min(1).optional(),
    content_type: z.string().default('text/plain; charset=utf-8'),
    headers: z
      .record(z.string().regex(/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/, 'not a header name'), z.string())
      .default({}),
  }).superRefine((value, ctx) => {
    const redirect = value.status >= 300 && value.status < 400
    if (redirect && value.location === undefined && value.status !== 304) {
      ctx.addIssue({ code: 'custom', path: ['location'], message: `status ${value.status} needs a location` })
    }
    for (const [name, v] of Object.entries(value.headers)) {
      if (/[\r\n\0]/.test(v))
        ctx.addIssue({ code: 'custom', path: ['headers', name], message: 'CR, LF or NUL in a header value' })
    }
    const unknown = [...`${value.body ?? ''}${value.location ?? ''}`.matchAll(/\{([a-z_]+)\}/g)]
      .map((m) => m[1]!)
      .filter((name) => !(PLACEHOLDERS as readonly string[]).includes(name))
    if (unknown.length > 0) {
      ctx.addIssue({
        code: 'custom',
        message: `unknown placeholder {${unknown[0]}} (known: ${PLACEHOLDERS.map((p) => `{${p}}`).join(', ')})`,
      })
    }
  })

export type ReturnOptions = z.output<ReturnType<typeof returnSchema>>

export const returnAction: ActionDefinition<ReturnOptions> = {
  name: 'return',
  summary: 'answer with a fixed status, body, headers or redirect (nginx `return`)',
  schema: returnSchema,
  create(options) {
    const body = compileTemplate(options.body ?? '')
    const location = options.location === undefined ? undefined : compileTemplate(options.location)
    const constant = options.body === undefined || !HAS_PLACEHOLDER.test(options.body)
    const fixedBody = constant ? Buffer.from(options.body ?? '') : undefined
    const baseHeaders: Record<string, string | number> = { ...options.headers }
    if ((options.body ?? '') !== '') baseHeaders['content-type'] = options.content_type
    // A constant response's header fields are built once, as the flat list writeHead takes.
    const fixedHeaders =
      fixedBody && !location
        ? Object.entries({ ...baseHeaders, 'content-length': fixedBody.length }).flatMap(([n, v]) => [
            n,
            String(v),
          ])
        : undefined
    return {
      handle(ctx) {
        if (fixedHeaders) {
          ctx.res.writeHead(options.status, fixedHeaders)
          ctx.res.end(ctx.method === 'HEAD' ? undefined : fixedBody)
          return
        }
        const buf = fixedBody ?? Buffer.from(body(ctx))
        const headers: Record<string, string | number> = { ...baseHeaders, 'content-length': buf.length }
        if (location) headers.location = location(ctx)
        ctx.res.writeHead(options.status, headers)
        ctx.res.end(ctx.method === 'HEAD' ? undefined : buf)
      },
    }
  },
}
