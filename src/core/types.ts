import type { Metrics } from './metrics.js'
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Server } from 'node:net'
import type { Duplex } from 'node:stream'
import type { Logger } from 'pino'
import type { z } from 'zod'

/** Where the request came from and arrived at. Listeners other than HTTP (FastCGI, uwsgi) supply their own. */
export interface ConnectionInfo {
  remoteAddress: string
  remotePort: number
  localAddress: string
  localPort: number
  /** true when the client reached us over TLS (HTTPS=on for gateways). */
  secure: boolean
}

/** A node:http request listener: what the app-side servers (uwsgi, FastCGI) hand requests to. */
export type RequestListener = (req: IncomingMessage, res: ServerResponse) => void

/** What the router matched, so gateways can compute SCRIPT_NAME and friends. */
export interface RouteMatch {
  /** Index of the route in the config's `routes` list. */
  index: number
  /** The URL path prefix the route owns ('' for regex routes, the whole path for exact routes). */
  prefix: string
  /** Capture groups of a regex route. */
  params: readonly string[]
}

/** URL prefix the route owns, without a trailing slash ('' for '/' and regex routes). */
export function routePrefix(ctx: RequestContext): string {
  const prefix = ctx.route.prefix
  return prefix.endsWith('/') ? prefix.slice(0, -1) : prefix
}

/**
 * The one request object every listener produces and every handler consumes
 * (docs/architecture.md: "the request path"). `req`/`res` are node:http-shaped.
 */
export interface RequestContext {
  req: IncomingMessage
  res: ServerResponse
  method: string
  /** The path of the request-target exactly as received (percent-encoded). */
  rawPath: string
  /** Query string without '?', '' when there is none; never decoded. */
  query: string
  /** Percent-decoded path with dot-segments resolved; never leaves '/'. */
  path: string
  /** Host name without port, lower-cased ('' when the request had none). */
  host: string
  /** Port from the Host header, or the local port. */
  port: number
  scheme: 'http' | 'https'
  conn: ConnectionInfo
  route: RouteMatch
  /** Largest request body the route accepts, in bytes. */
  maxBodyBytes: number
  log: Logger
}

export interface Handler {
  handle(ctx: RequestContext): void | Promise<void>
  /** Release processes, pools and timers. Called on shutdown and when a reload replaces the handler. */
  close?(): Promise<void>
  /** Resolves when the handler can serve (its managed workers are up); rejects when it cannot. */
  ready?(): Promise<void>
  /** SIGUSR2: replace the managed workers (a rolling reload by default), without loss. */
  reloadWorkers?(): Promise<void>
  /** The handler sends `100 Continue` itself (when the app first reads the body), not the front. */
  deferContinue?: boolean
  /**
   * An `Upgrade:` request (WebSocket) routed here, with its socket and the bytes read past
   * the head. `ctx.res` is a ServerResponse on that socket for a plain HTTP answer (the
   * connection closes after it). Handlers without it get upgrade requests as plain HTTP.
   */
  upgrade?(ctx: RequestContext, socket: Duplex, head: Buffer): void | Promise<void>
  /** The page this handler answers with a query string (status pages): rendered here for another thread. */
  render?(query: string): RenderedPage | Promise<RenderedPage>
}

export interface SchemaEnv {
  /** Directory that relative paths in this configuration are resolved against. */
  baseDir: string
}

export interface HandlerServices {
  log: Logger
  /** The server the handler serves in: a readiness check reads whether it is draining. */
  server?: ServerState
  /** Where the route's worker pool lives when the server runs several front threads (src/fronts/). */
  pools?: PoolSite
  /** The route's index in the configuration. */
  route?: number
}

/** A page a handler can compute without a response (status and metrics pages), to send from another thread. */
export interface RenderedPage {
  status: number
  headers: Record<string, string>
  body: string
}

/**
 * A route's worker pool with front_processes > 1: the main thread makes it (`build`) and
 * lends its workers to the front threads; a front thread gets a handle on the main
 * thread's pool instead (src/process/remote-pool.ts) and never calls `build`.
 */
/** What a front thread counts that the main thread sums (src/fronts/: the control API's status, /metrics). */
export interface FrontFigures {
  index: number
  requests: number
  inFlight: number
  openConnections: number
  /** The front's Prometheus metrics as prom-client's JSON (empty when none are counted). */
  metrics: unknown[]
}

/** The front threads of a server (front_processes > 1), as the control API sees them. */
export interface FrontGroup {
  /** Every other front's figures (this thread is front 0). */
  figures(): Promise<FrontFigures[]>
  /** Stop front `index` at once (its in-flight requests are cut) and start another: false when there is none. */
  restart(index: number): boolean
}

export interface PoolSite {
  provide<T>(build: () => T): T
}

/** What a handler may read of the server it belongs to. */
export interface ServerState {
  /** Stopping: readiness answers 503 during shutdown_delay, before the listeners close. */
  readonly draining: boolean
  /** The server's Prometheus metrics (the `metrics` action shows them). */
  readonly metrics: Metrics
  /**
   * In a front thread (front_processes > 1): the page of route `route` as the main thread
   * renders it (its pools, every front's figures summed).
   */
  readonly relay?: ((route: number, query: string) => Promise<RenderedPage>) | undefined
}

/** A route action (`static`, `php`, `wsgi`...): its config table's schema and its handler. */
export interface ActionDefinition<Options = unknown> {
  name: string
  /** One line for `gatehouse --help` and docs. */
  summary: string
  /** Methods the action serves when the route does not list its own. */
  defaultMethods?: readonly string[]
  schema(env: SchemaEnv): z.ZodType<Options>
  create(options: Options, services: HandlerServices): Handler
}

/** An app-side server (uwsgi, FastCGI): a net.Server that closes its connections like node:http's. */
export interface ListenerServer extends Server {
  closeIdleConnections(): void
  closeAllConnections(): void
}

/** What app-side listeners read of the config: their own keys, and the header timeout. */
export type ListenerConfig<Shape extends z.ZodRawShape = z.ZodRawShape> = z.output<z.ZodObject<Shape>> & {
  readonly limits: { readonly header_timeout: number }
}

/**
 * A gateway's app-side listeners (`uwsgi_listen`, `fastcgi_listen`): requests that arrive
 * over the gateway's protocol take the same path as HTTP ones. Its top-level config keys,
 * how a server is made, how a reloaded config reaches a server that stays open.
 */
export interface ListenerDefinition<
  Shape extends z.ZodRawShape = z.ZodRawShape,
  S extends ListenerServer = ListenerServer,
> {
  /** For messages: `uwsgi`, `FastCGI`. */
  label: string
  /** The config key listing the addresses (`uwsgi_listen`), also the log field naming one. */
  key: string
  /** The top-level config keys, spread into the config schema. */
  shape(): Shape
  addresses(config: ListenerConfig<Shape>): readonly string[]
  create(handler: RequestListener, config: ListenerConfig<Shape>, log: Logger): S
  /** Apply a reloaded config's limits to a server that stays open. */
  apply(server: S, config: ListenerConfig<Shape>): void
  /** Counters of one server, for Gatehouse.listenerStats(). */
  stats?(server: S): { connections: number; requests: number }
}

/**
 * A gateway: one folder under src/gateways/ whose index.ts exports one of these, listed in
 * the catalog of src/gateways/index.ts. The config schema, the router and the server pick up
 * its actions and listeners from there.
 */
export interface GatewayDefinition {
  /** The folder's name. */
  name: string
  /**
   * Its route actions, by the key that names them in a route (`{ path = "/", php = {...} }`).
   * Keyed rather than listed so that the config's types know each action's options.
   */
  actions?: Readonly<Record<string, ActionDefinition>>
  listener?: ListenerDefinition
}

/*
 * Types over a union of gateway definitions (`(typeof GATEWAYS)[number]`): these conditional
 * types distribute over it, so each gateway's own keys and types are kept.
 */

/** The route keys of the gateways' actions: `'static' | 'php' | ...`. */
export type ActionKey<G> = G extends { actions: infer A } ? keyof A & string : never
/** The action that `K` names among the gateways' actions. */
export type ActionAt<G, K extends string> = G extends { actions: infer A }
  ? K extends keyof A
    ? A[K]
    : never
  : never
/** The top-level config keys of the gateways' listeners: `'uwsgi_listen' | ...`. */
export type ListenerKey<G> = G extends { listener: { shape(): infer S } } ? keyof S & string : never
/** The schema of the listener config key `K`. */
export type ListenerAt<G, K extends string> = G extends { listener: { shape(): infer S } }
  ? K extends keyof S
    ? S[K]
    : never
  : never
