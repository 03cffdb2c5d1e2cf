import { isIP } from 'node:net'
import { resolve } from 'node:path'
import { z } from 'zod'
import { parseListenAddress } from '../core/address.js'
import type {
  ActionAt,
  ActionDefinition,
  ActionKey,
  GatewayDefinition,
  ListenerAt,
  ListenerKey,
  SchemaEnv,
} from '../core/types.js'
import { logSchema } from '../core/logging.js'
import { encodeSchema } from '../core/schema/encode.js'
import { existingDir, filePath } from '../core/schema/paths.js'
import { strictObject } from '../core/schema/strict.js'
import { type ListenEntry, tlsSchema } from '../core/tls.js'
import { acmeProblems } from '../acme/hosts.js'
import { type AcmeSettings, acmeSchema, CHALLENGE_TYPES } from '../acme/settings.js'
import { DEFAULT_MAX_BODY_BYTES, duration, size } from '../core/schema/units.js'
import { resolveUpstreamRefs, upstreamsSchema } from '../core/upstream/schema.js'

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

/** A Unix socket file mode: `"0600"` (octal text) or a number (TOML's `0o600`). */
const FILE_MODE = z
  .union([
    z.number().int().min(0).max(0o777),
    z.string().regex(/^0?[0-7]{3}$/, 'an octal file mode such as "0600"'),
  ])
  .transform((m) => (typeof m === 'number' ? m : parseInt(m, 8)))

/** What `control` becomes: where the control API listens and how it is guarded (src/control/). */
export interface ControlConfig {
  /** `unix:/path` (relative paths resolved against the config's directory) or `host:port`. */
  listen: string
  /** Bearer token every request must carry; GATEHOUSE_CONTROL_TOKEN at start when absent. */
  token?: string
  /** The Unix socket file's mode (default 0600: the server's user only). */
  mode: number
  /** The state file (the applied configuration); default: next to the config file. */
  state?: string
}

/**
 * `control = "unix:/run/gatehouse/control.sock"` or `control = { listen, token, mode, state }`:
 * the live control API (docs/control-api.md). Whether a TCP address may be used without a
 * token is decided at start (the token may come from the environment).
 */
function controlSchema(env: SchemaEnv) {
  const absolute = (listen: string) =>
    listen.startsWith('unix:') && !listen.slice(5).startsWith('/')
      ? `unix:${resolve(env.baseDir, listen.slice(5))}`
      : listen
  return z
    .union([
      LISTEN,
      strictObject({
        listen: LISTEN,
        token: z.string().min(16, 'a token has at least 16 characters').optional(),
        mode: FILE_MODE.default(0o600),
        state: filePath(env).optional(),
      }),
    ])
    .transform((c): ControlConfig => {
      if (typeof c === 'string') return { listen: absolute(c), mode: 0o600 }
      return {
        listen: absolute(c.listen),
        mode: c.mode,
        ...(c.token !== undefined ? { token: c.token } : {}),
        ...(c.state !== undefined ? { state: c.state } : {}),
      }
    })
}

/**
 * A `listen` entry: an address string (plain HTTP), or `{ address, tls }` (HTTPS when `tls`
 * is given, src/core/tls.ts). A plain entry stays a string after parsing.
 */
const listenEntry = (env: SchemaEnv) =>
  z.union([
    LISTEN,
    strictObject({
      address: LISTEN,
      tls: tlsSchema(env).optional(),
      /** A plain listener that answers every request with a redirect to HTTPS (src/http/redirect.ts). */
      redirect_http: z.union([z.literal(true), z.number().int().min(1).max(65_535)]).optional(),
      /** HTTP/2 (ALPN h2) on this TLS listener: on unless `[http2] enabled = false` (src/http/h2.ts). */
      http2: z.boolean().optional(),
      /** Cleartext HTTP/2 with prior knowledge on this plain listener (off by default). */
      h2c: z.boolean().optional(),
    })
      .refine((e) => !(e.tls && e.redirect_http !== undefined), {
        message: 'redirect_http is for a plain listener: give tls or redirect_http, not both',
      })
      .refine((e) => e.tls || e.http2 === undefined, {
        path: ['http2'],
        message:
          'http2 is for a TLS listener (give tls); on a plain listener, h2c = true serves cleartext HTTP/2',
      })
      .refine((e) => !(e.h2c && (e.tls || e.redirect_http !== undefined)), {
        path: ['h2c'],
        message: 'h2c is for a plain listener that serves routes (not with tls or redirect_http)',
      }),
  ])

/** `[http2]`: HTTP/2's limits, for every listener that speaks it (docs/http-front.md, HTTP/2). */
export function http2Schema() {
  return strictObject({
    /** HTTP/2 on TLS listeners (a listen entry's `http2 = false` turns it off there; `--no-http2`). */
    enabled: z.boolean().default(true),
    /** SETTINGS_MAX_CONCURRENT_STREAMS: nginx's http2_max_concurrent_streams. */
    max_concurrent_streams: z
      .number()
      .int()
      .min(1)
      .max(2 ** 31 - 1)
      .default(128),
    /** Our SETTINGS must be acknowledged within this; else the session is closed (RFC 9113 6.5.3). */
    settings_timeout: duration.prefault(10),
    /** Streams a client may reset within reset_window; one more closes its session (CVE-2023-44487). */
    max_resets: z.number().int().min(1).default(200),
    reset_window: duration.prefault(10),
  })
}

/** `redirect_http = true` sends to the first TLS listener: there must be one. */
function checkRedirects(list: z.output<ReturnType<typeof listenEntry>>[], ctx: z.RefinementCtx): void {
  const hasTls = list.some((e) => typeof e !== 'string' && e.tls)
  list.forEach((e, i) => {
    if (typeof e !== 'string' && e.redirect_http === true && !hasTls)
      ctx.addIssue({
        code: 'custom',
        path: [i, 'redirect_http'],
        message: 'no listen entry has tls: give the HTTPS port (redirect_http = 443)',
      })
  })
}

const oneOrMany = <T extends z.ZodType>(item: T) =>
  z.union([item, z.array(item).min(1)]).transform((v) => (Array.isArray(v) ? v : [v]) as z.output<T>[])

export function limitsSchema() {
  return strictObject({
    max_header_bytes: size.prefault(16 * 1024),
    max_headers: z.number().int().min(1).max(10_000).default(100),
    max_body_bytes: size.prefault(DEFAULT_MAX_BODY_BYTES),
    header_timeout: duration.prefault(10),
    request_timeout: duration.prefault(300),
    keepalive_timeout: duration.prefault(5),
    max_requests_per_connection: z.number().int().min(0).default(0),
    /**
     * Open connections one client address may hold (nginx `limit_conn`); the requests of one
     * more get 503 GH_ERR_CONN_LIMIT and its connection is closed. 0: no limit.
     */
    max_connections_per_ip: z.number().int().min(0).default(0),
    /**
     * Connections the kernel queues before they are accepted (listen(2)'s backlog, capped by
     * net.core.somaxconn): nginx's `listen ... backlog=`, gunicorn's --backlog. Node's default.
     */
    backlog: z.number().int().min(1).max(65_535).default(511),
  }).superRefine((limits, ctx) => {
    if (limits.request_timeout > 0 && limits.header_timeout > limits.request_timeout) {
      ctx.addIssue({ code: 'custom', path: ['header_timeout'], message: 'must not exceed request_timeout' })
    }
  })
}

/*
 * The config's types follow from the gateways given: one optional key per route action,
 * typed by the action's schema, and the listeners' top-level keys.
 */
type ActionSchema<A> = A extends { schema(env: SchemaEnv): infer S extends z.ZodType } ? S : never

/** The route keys of the gateways' actions (`static`, `php`, ...), each optional. */
export type ActionsShape<G> = { [K in ActionKey<G>]: z.ZodOptional<ActionSchema<ActionAt<G, K>>> }
/** The top-level keys of the gateways' listeners (`uwsgi_listen`, ...). */
export type ListenersShape<G> = { [K in ListenerKey<G>]: ListenerAt<G, K> }

/** Every action of `gateways`, by the key that names it in a route, in their order. */
function actionsOf(gateways: readonly GatewayDefinition[]): Map<string, ActionDefinition> {
  return new Map(gateways.flatMap((g) => Object.entries(g.actions ?? {})))
}

function routeSchema<G extends GatewayDefinition>(env: SchemaEnv, gateways: readonly G[]) {
  const definitions = actionsOf(gateways)
  const names = [...definitions.keys()]
  const actionShape = Object.fromEntries(
    [...definitions].map(([name, action]) => [name, action.schema(env).optional()]),
  ) as ActionsShape<G>
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
    /** Compression on the fly for this route, over the top-level `encode` (src/http/encode.ts). */
    encode: encodeSchema().optional(),
    /**
     * File offload from the app's response (src/http/offload.ts): `root` honours X-Sendfile
     * for files under it, `accel_redirect` honours X-Accel-Redirect to `internal` routes.
     */
    sendfile: strictObject({
      root: existingDir(env).optional(),
      accel_redirect: z.boolean().default(false),
    })
      .refine((v) => v.root !== undefined || v.accel_redirect, {
        message: 'give root (X-Sendfile), accel_redirect = true (X-Accel-Redirect), or both',
      })
      .optional(),
    /** Only X-Accel-Redirect reaches this route (nginx's `internal`); a client's request gets 404. */
    internal: z.boolean().optional(),
    ...actionShape,
  }).superRefine((route, ctx) => {
    const given = route as Record<string, unknown>
    const matchers = (['path', 'exact', 'regex'] as const).filter((k) => given[k] !== undefined)
    if (matchers.length > 1) {
      ctx.addIssue({
        code: 'custom',
        message: `give one of path, exact, regex (got ${matchers.join(' and ')})`,
      })
    }
    const actions = names.filter((name) => given[name] !== undefined)
    if (actions.length !== 1) {
      ctx.addIssue({
        code: 'custom',
        message:
          actions.length === 0
            ? `a route needs one action: ${names.join(', ')}`
            : `a route has exactly one action (got ${actions.join(' and ')})`,
      })
    }
  })
}

/**
 * The config schema for a set of gateways (those loaded, src/gateways/index.ts): the top-level
 * keys, a route's keys with one per action, and the gateways' listener keys. The config's
 * types are this schema's output and input (src/config.ts).
 */
export function configSchema<const G extends readonly GatewayDefinition[]>(env: SchemaEnv, gateways: G) {
  const listenerShape = Object.assign(
    {},
    ...gateways.map((g) => g.listener?.shape() ?? {}),
  ) as ListenersShape<G[number]>
  return strictObject({
    listen: oneOrMany(listenEntry(env)).superRefine(checkRedirects).default(['127.0.0.1:8080']),
    server_name: z.string().optional(),
    shutdown_grace: duration.prefault(10),
    /**
     * On SIGTERM, keep serving this long with readiness checks answering 503 before the
     * listeners close, so a load balancer stops sending first (Caddy's shutdown_delay).
     */
    shutdown_delay: duration.prefault(0),
    /**
     * Front threads sharing the listeners and the pools (docs/architecture.md, "Using more
     * than one core"): a number, or "auto" (one per core). `gatehouse serve` only.
     */
    front_processes: z.union([z.number().int().min(1).max(256), z.literal('auto')]).default(1),
    /**
     * Run as this user (a name or a uid) once the listeners are bound, when started as root;
     * the workers and CGI scripts run as it from the start (gunicorn's --user, nginx's user).
     */
    user: z.union([z.string().min(1), z.number().int().min(0)]).optional(),
    /** Its group (a name or a gid); default: the user's primary group. */
    group: z.union([z.string().min(1), z.number().int().min(0)]).optional(),
    /** The file mode creation mask of the server and its children, octal: "027" (gunicorn's --umask). */
    umask: z
      .string()
      .regex(/^0?[0-7]{3}$/, 'an octal mask such as "027"')
      .optional(),
    log: logSchema(env).prefault({}),
    control: controlSchema(env).optional(),
    limits: limitsSchema().prefault({}),
    http2: http2Schema().prefault({}),
    /** Compression on the fly, server-wide: every route's default (off when absent, as in Caddy). */
    encode: encodeSchema().optional(),
    /** Upstream groups by name (`[upstreams.php]`), for the actions' upstream keys (src/core/upstream/). */
    upstreams: upstreamsSchema(env).optional(),
    routes: z.array(routeSchema<G[number]>(env, gateways)).default([]),
    /** Automatic certificates for the listeners' `tls = { acme = [...] }` hosts (src/acme/). */
    acme: acmeSchema(env).prefault({}),
    ...listenerShape,
  })
    .superRefine(
      (config, ctx) => {
        // Generic over the gateways, the object's keys are not known to TypeScript here.
        const { routes, upstreams } = config as unknown as {
          routes: unknown
          upstreams?: Parameters<typeof resolveUpstreamRefs>[1]
        }
        if (Array.isArray(routes)) resolveUpstreamRefs(routes, upstreams, ctx)
        // Run when other keys have problems too, so that every problem is reported at once.
      },
      { when: () => true },
    )
    .superRefine((value, ctx) => {
      // The generic shape (gateways' keys) hides these three from the type checker.
      const config = value as unknown as {
        listen: ListenEntry | ListenEntry[]
        routes: { host?: string | string[] | undefined }[]
        acme?: AcmeSettings | undefined
      }
      const challenges = config.acme?.challenges ?? [...CHALLENGE_TYPES]
      for (const { path, message } of acmeProblems([config.listen].flat(), config.routes, challenges))
        ctx.addIssue({ code: 'custom', path, message })
    })
}
