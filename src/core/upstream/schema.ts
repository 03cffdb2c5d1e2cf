/*
 * The config of upstream groups: the top-level `[upstreams.NAME]` tables, and what an
 * action's upstream key (`pass`, `fastcgi`, `upstream`) accepts: one address (as before),
 * a list of addresses (a group made in place) or the name of a group. The names are
 * resolved against the top-level tables by resolveUpstreamRefs() once the whole config
 * is parsed; a name that is no group is a config error at its path.
 */
import { z } from 'zod'
import { resolveUpstreamAddress } from '../address.js'
import { strictObject } from '../schema/strict.js'
import { duration } from '../schema/units.js'
import type { SchemaEnv } from '../types.js'
import type { UpstreamGroupSpec, UpstreamServerSpec } from './group.js'

/** A group's name: what `fastcgi = "php"` names; a bare word (no `:` or `/`) in an upstream key. */
const GROUP_NAME = /^[A-Za-z_][A-Za-z0-9_.-]*$/

/**
 * An upstream address in the config, a group's server or a single one: `unix:/path` (a
 * relative path resolves against the config's directory), `host:port`, `[v6]:port` or a
 * bare port (127.0.0.1); parsed to its text form.
 */
export function upstreamAddress(env: SchemaEnv) {
  return z.string().transform((value, ctx) => {
    try {
      return resolveUpstreamAddress(value, env.baseDir).text
    } catch (err) {
      ctx.addIssue({ code: 'custom', message: (err as Error).message })
      return z.NEVER
    }
  })
}

const serverDefaults = { weight: 1, max_fails: 1, fail_timeout: 10_000, max_conns: 0, backup: false }

function serverSchema(env: SchemaEnv) {
  return z.union([
    upstreamAddress(env).transform((address): UpstreamServerSpec => ({ address, ...serverDefaults })),
    strictObject({
      address: upstreamAddress(env),
      weight: z.number().int().min(1).max(1000).default(1),
      max_fails: z.number().int().min(0).max(1000).default(1),
      fail_timeout: duration.prefault(10),
      max_conns: z.number().int().min(0).max(100_000).default(0),
      backup: z.boolean().default(false),
    }),
  ])
}

const NEXT_UPSTREAM = z.enum(['error', 'timeout', 'http_502', 'http_503', 'http_504'])

/** The keys of a group besides its servers: balancing, retries, health checks. */
function groupSettingsShape() {
  return {
    /** `round_robin` (smooth weighted, as nginx) or `least_conn` (fewest in flight per weight). */
    balance: z.enum(['round_robin', 'least_conn']).default('round_robin'),
    /** Servers a request is tried on at most; 0: each once (nginx proxy_next_upstream_tries 0). */
    tries: z.number().int().min(0).max(100).default(0),
    /** No further try starts this long after the first (0: no limit); nginx proxy_next_upstream_timeout. */
    try_timeout: duration.prefault(0),
    /** When a request goes to the next server (nginx proxy_next_upstream); error and timeout always count as failures. */
    next_upstream: z.array(NEXT_UPSTREAM).default(['error', 'timeout']),
    /** Active health checks: each server probed every `interval` (the probe depends on the action). */
    health: strictObject({
      interval: duration.prefault(5),
      timeout: duration.prefault(2),
      passes: z.number().int().min(1).max(100).default(1),
      fails: z.number().int().min(1).max(100).default(1),
      /** FastCGI: the SCRIPT_FILENAME (php: relative to root) or php-fpm ping.path; uwsgi: the request path. */
      path: z
        .string()
        .regex(/^\/[^?#\s]*$/, 'a path starts with "/" and has no query, fragment or space')
        .optional(),
      /** Reply statuses that pass; default any from 200 to 399. */
      status: z.array(z.number().int().min(100).max(599)).default([]),
    }).optional(),
  }
}

/** An `[upstreams.NAME]` table. */
export function upstreamGroupSchema(env: SchemaEnv) {
  return strictObject({
    servers: z.array(serverSchema(env)).min(1, 'a group needs at least one server'),
    ...groupSettingsShape(),
  })
}

export type UpstreamGroupConfig = z.output<ReturnType<typeof upstreamGroupSchema>>

/** The top-level `upstreams` table: groups by name. */
export function upstreamsSchema(env: SchemaEnv) {
  // Names checked here rather than as the record's key schema, whose message would be zod's "Invalid key in record".
  return z.record(z.string(), upstreamGroupSchema(env)).superRefine(
    (groups, ctx) => {
      if (typeof groups !== 'object' || groups === null) return
      for (const name of Object.keys(groups))
        if (!GROUP_NAME.test(name) || /^\d+$/.test(name))
          ctx.addIssue({
            code: 'custom',
            path: [name],
            message:
              'a group name is letters, digits, `_`, `.`, `-`, starting with a letter or `_` (no `:` or `/`)',
          })
    },
    // Names are checked even when a group has problems of its own.
    { when: () => true },
  )
}

/**
 * What an action's upstream key holds once parsed: one address (the text, as before), or a
 * group: made in place from a list, or named (its spec filled in by resolveUpstreamRefs).
 */
export type UpstreamTarget = string | UpstreamGroupRef

export interface UpstreamGroupRef {
  kind: 'upstream-group'
  /** The `[upstreams.NAME]` name; for a list given in place, `<list>` and its addresses. */
  name: string
  /** Set for a list at once, for a name once the config is resolved. */
  spec?: UpstreamGroupSpec
}

export function isGroupRef(target: unknown): target is UpstreamGroupRef {
  return (
    typeof target === 'object' && target !== null && (target as UpstreamGroupRef).kind === 'upstream-group'
  )
}

/** The spec of a group from its config table. */
export function groupSpec(name: string, config: UpstreamGroupConfig): UpstreamGroupSpec {
  return {
    name,
    servers: config.servers,
    balance: config.balance,
    tries: config.tries,
    try_timeout: config.try_timeout,
    next_upstream: config.next_upstream,
    health: config.health,
  }
}

/**
 * An action's upstream key: `"unix:/run/php.sock"` / `"10.0.0.5:9000"` (one server, as
 * before), `["10.0.0.5:9000", "10.0.0.6:9000"]` (a group in place, default settings), or
 * `"php"` (a bare name: the `[upstreams.php]` group).
 */
export function upstreamTargetSchema(env: SchemaEnv) {
  const address = upstreamAddress(env)
  return z.union([
    z.string().transform((value, ctx): UpstreamTarget => {
      if (GROUP_NAME.test(value) && !/^\d+$/.test(value)) return { kind: 'upstream-group', name: value }
      const parsed = address.safeParse(value)
      if (parsed.success) return parsed.data
      ctx.addIssue({ code: 'custom', message: parsed.error.issues[0]?.message ?? 'not an address' })
      return z.NEVER
    }),
    z
      .array(serverSchema(env))
      .min(1, 'give at least one server')
      .transform((servers): UpstreamTarget => {
        const name = servers.map((s) => s.address).join(',')
        const settings = z.object(groupSettingsShape()).parse({})
        return { kind: 'upstream-group', name, spec: groupSpec(name, { servers, ...settings }) }
      }),
  ])
}

/**
 * Fill in the spec of every named group an action refers to (a route's options, walked to
 * any depth), or report a config issue at its path when there is no such group.
 */
export function resolveUpstreamRefs(
  routes: readonly unknown[],
  groups: Record<string, UpstreamGroupConfig> | undefined,
  ctx: z.RefinementCtx,
): void {
  const visit = (value: unknown, path: (string | number)[]): void => {
    if (isGroupRef(value)) {
      if (value.spec) return
      const config = groups?.[value.name]
      if (config) value.spec = groupSpec(value.name, config)
      else {
        const known = Object.keys(groups ?? {})
        ctx.addIssue({
          code: 'custom',
          path,
          message: `no upstream group ${JSON.stringify(value.name)} (${known.length ? `groups: ${known.join(', ')}` : 'define it in [upstreams.' + value.name + ']'}; an address has a ":" or "/")`,
        })
      }
      return
    }
    if (Array.isArray(value)) value.forEach((v, i) => visit(v, [...path, i]))
    else if (typeof value === 'object' && value !== null && Object.getPrototypeOf(value) === Object.prototype)
      for (const [k, v] of Object.entries(value)) visit(v, [...path, k])
  }
  routes.forEach((r, i) => visit(r, ['routes', i]))
}

/** An action's upstream key `key` and its alias `upstream`, both optional (withUpstreamAlias checks them). */
export function upstreamTargetShape<K extends string>(env: SchemaEnv, key: K) {
  const target = () => upstreamTargetSchema(env).optional()
  return { [key]: target(), upstream: target() } as { [P in K | 'upstream']: ReturnType<typeof target> }
}

type WithTarget<O, K extends string, Required extends boolean> = Omit<O, 'upstream' | K> &
  (Required extends true ? { [P in K]: UpstreamTarget } : { [P in K]?: UpstreamTarget })

/**
 * The action's upstream key under two names: its own (`pass`, `fastcgi`) and `upstream`
 * (issue 15's name); given both, the config is in error. The value ends up under `key`.
 */
export function withUpstreamAlias<
  K extends string,
  R extends boolean,
  S extends z.ZodType<{ [P in K | 'upstream']?: UpstreamTarget | undefined }>,
>(key: K, schema: S, required: R) {
  return schema
    .superRefine((options, ctx) => {
      const o = options as Record<string, unknown>
      if (o[key] !== undefined && o.upstream !== undefined)
        ctx.addIssue({ code: 'custom', path: ['upstream'], message: `give ${key} or upstream, not both` })
      else if (required && o[key] === undefined && o.upstream === undefined)
        ctx.addIssue({
          code: 'custom',
          path: [key],
          message: `give ${key} (or upstream): an address, a list, or a group name`,
        })
    })
    .transform((options) => {
      const { upstream, ...rest } = options as Record<string, unknown>
      const target = rest[key] ?? upstream
      if (target !== undefined) rest[key] = target
      else delete rest[key]
      return rest as WithTarget<z.output<S>, K, R>
    })
}
