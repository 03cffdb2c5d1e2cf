import { isIP } from 'node:net'
import { z } from 'zod'
import { ACTION_NAMES, ACTIONS, type ActionName } from '../gateways/index.js'
import { parseListenAddress } from '../core/address.js'
import type { SchemaEnv } from '../core/types.js'
import { logSchema } from '../core/logging.js'
import { strictObject } from '../core/schema/strict.js'
import { duration, size } from '../core/schema/units.js'
import { fastcgiListenerShape } from '../gateways/fastcgi/listen-config.js'
import { uwsgiListenerShape } from '../gateways/uwsgi/listen-config.js'

const METHOD = z
  .string()
  .regex(/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/, 'not an HTTP method token')
  .transform((m) => m.toUpperCase())

const HOST_PATTERN = z
  .string()
  .transform((h) => h.toLowerCase())
  .refine(
    (h) =>
      /^(\*\.)?[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$/.test(h) || isIP(h) !== 0,
    {
      message: 'not a host name or `*.domain` pattern',
    },
  )

const PATH_PREFIX = z
  .string()
  .regex(/^\/[^?#\s]*$/, 'a path starts with "/" and has no query, fragment or space')

const LISTEN = z.string().superRefine((value, ctx) => {
  try {
    parseListenAddress(value)
  } catch (err) {
    ctx.addIssue({ code: 'custom', message: (err as Error).message })
  }
})

const oneOrMany = <T extends z.ZodType>(item: T) =>
  z.union([item, z.array(item).min(1)]).transform((v) => (Array.isArray(v) ? v : [v]) as z.output<T>[])

export function limitsSchema() {
  return strictObject({
    max_header_bytes: size.prefault(16 * 1024),
    max_headers: z.number().int().min(1).max(10_000).default(100),
    max_body_bytes: size.prefault(1024 * 1024),
    header_timeout: duration.prefault(10),
    request_timeout: duration.prefault(300),
    keepalive_timeout: duration.prefault(5),
    max_requests_per_connection: z.number().int().min(0).default(0),
  }).superRefine((limits, ctx) => {
    if (limits.request_timeout > 0 && limits.header_timeout > limits.request_timeout) {
      ctx.addIssue({ code: 'custom', path: ['header_timeout'], message: 'must not exceed request_timeout' })
    }
  })
}

function routeSchema(env: SchemaEnv) {
  const actionShape = Object.fromEntries(
    ACTION_NAMES.map((name) => [name, ACTIONS[name].schema(env).optional()]),
  ) as {
    [K in ActionName]: z.ZodOptional<ReturnType<(typeof ACTIONS)[K]['schema']>>
  }
  return strictObject({
    host: oneOrMany(HOST_PATTERN).optional(),
    path: PATH_PREFIX.optional(),
    exact: PATH_PREFIX.optional(),
    regex: z
      .string()
      .refine(
        (r) => {
          try {
            new RegExp(r)
            return true
          } catch {
            return false
          }
        },
        { message: 'not a valid regular expression' },
      )
      .optional(),
    methods: z.array(METHOD).min(1).optional(),
    max_body_bytes: size.optional(),
    ...actionShape,
  }).superRefine((route, ctx) => {
    const matchers = (['path', 'exact', 'regex'] as const).filter((k) => route[k] !== undefined)
    if (matchers.length > 1) {
      ctx.addIssue({
        code: 'custom',
        message: `give one of path, exact, regex (got ${matchers.join(' and ')})`,
      })
    }
    const actions = ACTION_NAMES.filter((name) => route[name] !== undefined)
    if (actions.length !== 1) {
      ctx.addIssue({
        code: 'custom',
        message:
          actions.length === 0
            ? `a route needs one action: ${ACTION_NAMES.join(', ')}`
            : `a route has exactly one action (got ${actions.join(' and ')})`,
      })
    }
  })
}

export function configSchema(env: SchemaEnv) {
  return strictObject({
    listen: oneOrMany(LISTEN).default(['127.0.0.1:8080']),
    server_name: z.string().optional(),
    shutdown_grace: duration.prefault(10),
    log: logSchema(env).prefault({}),
    limits: limitsSchema().prefault({}),
    routes: z.array(routeSchema(env)).default([]),
    ...uwsgiListenerShape(),
    ...fastcgiListenerShape(),
  })
}

export type GatehouseConfig = z.output<ReturnType<typeof configSchema>>
/** What a config file, the CLI or the library may give: the schema's input side. */
export type GatehouseConfigInput = z.input<ReturnType<typeof configSchema>>
export type RouteConfig = GatehouseConfig['routes'][number]
export type LimitsConfig = GatehouseConfig['limits']
