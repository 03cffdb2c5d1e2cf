import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { createServer as createTlsServer, type Server as TlsServer } from 'node:https'
import type { Socket } from 'node:net'
import type { TLSSocket } from 'node:tls'
import type { Http2Session } from 'node:http2'
import type { Duplex } from 'node:stream'
import {
  type GatehouseConfig,
  type GatehouseConfigInput,
  type LimitsConfig,
  loadConfigGateways,
  validateConfig,
} from './config.js'
import { ERROR_CODES, type ErrorCode } from './core/errors.js'
import { ACTION_NAMES, actionDefinition, loadedGateways } from './gateways/index.js'
import { Metrics } from './core/metrics.js'
import { BODY_REFUSED, refuse, sendError, sendStatus } from './core/respond.js'
import { reasonPhrase } from './core/http-headers.js'
import { countBody, Logs } from './core/logging.js'
import { Router } from './router/router.js'
import { CONTINUE_DEFERRED, connectionInfo } from './http/connection.js'
import { buildContext, type ParsedRequest, parseRequest, runHandler } from './http/context.js'
import { type BoundAddress as ListeningAddress, bindServer, listenUrl } from './core/bind.js'
import { type ListenAddress, parseListenAddress } from './core/address.js'
import { upgradeResponse } from './http/upgrade.js'
import { type EncodeSettings, encodeResponse, encodeSettings } from './http/encode.js'
import { offloadResponse } from './http/offload.js'
import { parseTarget } from './http/request-target.js'
import { InboundListeners } from './inbound/listeners.js'
import { redirectToHttps } from './http/redirect.js'
import {
  chooseCertificate,
  type ListenEntry,
  listenEntry,
  type LoadedTls,
  loadListenTls,
} from './core/tls.js'
import type { Http2Front, Http2Limits } from './http/h2.js'
import type {
  FrontFigures,
  FrontGroup,
  Handler,
  PoolSite,
  RenderedPage,
  RouteMatch,
  ServerState,
} from './core/types.js'
import { AcmeCertificates, acmeAlpnCallback, acmeSniCallback } from './acme/certificates.js'
import { allAcmeHosts, listenAcmeHosts, usableChallenges } from './acme/hosts.js'

interface RouteEntry {
  handler: Handler
  maxBodyBytes: number
  /** Compression on the fly (`encode`), or null. */
  encode: EncodeSettings | null
  /** `sendfile`: X-Sendfile (a static handler on its root) and X-Accel-Redirect; or null. */
  offload: { root?: string; files?: Handler; accel: boolean } | null
  /** Reached only through X-Accel-Redirect (nginx's `internal`). */
  internal: boolean
}

/** Everything derived from one config; swapped as a whole on reload. */
interface State {
  config: GatehouseConfig
  router: Router<RouteEntry>
  handlers: Handler[]
  /** Handlers kept from the state this one replaced (see reusableHandlers). */
  reused: Handler[]
  /** Some route shows metrics: requests are counted (see Metrics), by these route labels. */
  metricsOn: boolean
  routeLabels: string[]
  /** Requests still being served by this state's handlers. */
  active: number
  /** Set by reload on a replaced state: called when its last request ends. */
  onIdle: (() => void) | null
  /** A newer reload came while this state's pools were still starting: it is never used. */
  superseded: boolean
}

export type { BoundAddress as ListeningAddress } from './core/bind.js'

interface Listener {
  spec: ListenAddress
  server: Server
  bound: ListeningAddress
  /**
   * An HTTPS listener's certificates, replaced on reload (SNI reads them per handshake), and
   * the host names whose certificates ACME manages (src/acme/): those go first.
   */
  tls: { loaded: LoadedTls; acme: string[] } | undefined
  /** A `redirect_http` listener: where it sends (true: the first TLS listener's port). */
  redirect: { to: true | number } | undefined
  /** HTTP/2 on this listener (ALPN h2 with TLS, h2c without), or undefined. */
  h2: Http2Front | undefined
}

/** What a listener serves: kept across a reload only when this stays the same. */
const listenerKind = (l: { tls: unknown; acme: readonly string[]; redirect: unknown; h2: unknown }) =>
  (l.tls ? (l.acme.length > 0 ? 'https+acme' : 'https') : l.redirect ? 'redirect' : 'http') +
  (l.h2 ? '+h2' : '')

/** Whether a listen entry speaks HTTP/2: TLS unless turned off there or in `[http2]`, h2c when asked. */
function wantsHttp2(entry: ListenEntry, config: GatehouseConfig): boolean {
  if (typeof entry === 'string') return false
  if (entry.tls) return config.http2.enabled && entry.http2 !== false
  return entry.h2c === true && entry.redirect_http === undefined
}

function http2Limits(limits: LimitsConfig): Http2Limits {
  return {
    maxHeaderBytes: limits.max_header_bytes,
    maxHeaders: limits.max_headers,
    idleTimeout: limits.keepalive_timeout,
  }
}

/** Marks a connection beyond max_connections_per_ip: each of its requests gets 503. */
const OVER_LIMIT = Symbol('gatehouse.overConnectionLimit')

/** Read on the socket itself, or through an HTTP/2 request's socket proxy (it reads the session's socket). */
const overLimit = (socket: object | null): boolean =>
  socket !== null && (socket as { [OVER_LIMIT]?: true })[OVER_LIMIT] === true

/** An HTTP/2 request's session (undefined for HTTP/1.x): the connection it came on. */
const http2Session = (req: IncomingMessage): Http2Session | undefined =>
  (req as IncomingMessage & { stream?: { session?: Http2Session } }).stream?.session

/** The key of a request's connection: the socket, or for HTTP/2 the session (req.socket is a per-stream proxy). */
const connectionOf = (req: IncomingMessage): object | null => http2Session(req) ?? req.socket

/**
 * The handlers of `previous` that `config` can keep: a route whose action manages workers
 * (wsgi, asgi, php's pool) and whose action table is unchanged keeps its handler and pool,
 * which a reload then rolls (issue 18 item 10: a SIGHUP no longer starts a second pool
 * beside every unchanged one). Keyed by action name and its table as JSON, in route order.
 */
function reusableHandlers(previous: State | undefined): Map<string, Handler[]> {
  const reusable = new Map<string, Handler[]>()
  if (!previous) return reusable
  previous.config.routes.forEach((route, i) => {
    const handler = previous.handlers[i]!
    if (!handler.reloadWorkers) return
    const name = ACTION_NAMES.find((n) => route[n] !== undefined)!
    const key = `${name} ${JSON.stringify(route[name])}`
    reusable.set(key, [...(reusable.get(key) ?? []), handler])
  })
  return reusable
}

function buildState(
  config: GatehouseConfig,
  logs: Logs,
  server: ServerState,
  previous?: State,
  poolSite?: (key: string) => PoolSite,
): State {
  const handlers: Handler[] = []
  const reusable = reusableHandlers(previous)
  const reused: Handler[] = []
  const seen = new Map<string, number>()
  const specs = config.routes.map((route, index) => {
    const name = ACTION_NAMES.find((n) => route[n] !== undefined)!
    const def = actionDefinition(name)
    const key = `${name} ${JSON.stringify(route[name])}`
    const kept = reusable.get(key)?.shift()
    // A pool's key across threads: its action and table, and which route of that table it is.
    const nth = (seen.get(key) ?? 0) + 1
    seen.set(key, nth)
    const pools = poolSite?.(`${key} #${nth}`)
    const handler =
      kept ?? def.create(route[name], { log: logs.error, server, route: index, ...(pools ? { pools } : {}) })
    if (kept) reused.push(kept)
    handlers.push(handler)
    const methods = route.methods ?? def.defaultMethods
    return {
      ...(route.host ? { hosts: route.host } : {}),
      ...(route.path !== undefined ? { path: route.path } : {}),
      ...(route.exact !== undefined ? { exact: route.exact } : {}),
      ...(route.regex !== undefined ? { regex: route.regex } : {}),
      ...(methods ? { methods } : {}),
      target: {
        handler,
        maxBodyBytes: route.max_body_bytes ?? config.limits.max_body_bytes,
        encode: encodeSettings(config.encode, route.encode),
        offload: route.sendfile ? offloadTarget(route.sendfile, logs) : null,
        internal: route.internal === true,
      },
    }
  })
  return {
    config,
    router: new Router(specs),
    handlers,
    reused,
    // The control API serves the same metrics (GET /metrics on its socket).
    metricsOn: config.control !== undefined || config.routes.some((r) => r.metrics !== undefined),
    routeLabels: config.routes.map((r) => {
      const where = r.path ?? r.exact ?? r.regex ?? '/'
      return r.host ? `${[r.host].flat()[0]}${where}` : where
    }),
    active: 0,
    onIdle: null,
    superseded: false,
  }
}

/** A route's `sendfile`: X-Sendfile files are served by a static handler on its root. */
function offloadTarget(sendfile: { root?: string | undefined; accel_redirect: boolean }, logs: Logs) {
  if (sendfile.root === undefined) return { accel: sendfile.accel_redirect }
  const def = actionDefinition('static')
  // The app chose the file: no index, no listing, and a dotfile is its business.
  const options = def
    .schema({ baseDir: sendfile.root })
    .parse({ root: sendfile.root, index: [], dotfiles: 'allow' })
  return {
    root: sendfile.root,
    files: def.create(options, { log: logs.error }),
    accel: sendfile.accel_redirect,
  }
}

function serverOptions(limits: LimitsConfig) {
  return {
    maxHeaderSize: limits.max_header_bytes,
    headersTimeout: limits.header_timeout,
    requestTimeout: limits.request_timeout,
    keepAliveTimeout: limits.keepalive_timeout,
    // How often node checks header/request timeouts; the default (30 s) would let a
    // slow client outlive a short header_timeout by far.
    connectionsCheckingInterval: Math.max(100, Math.min(1000, Math.floor(limits.header_timeout / 4) || 1000)),
    requireHostHeader: true,
    joinDuplicateHeaders: false,
  }
}

/** What Node 20 adds to keepAliveTimeout for an idle socket (HTTP_SERVER_KEEP_ALIVE_TIMEOUT_BUFFER). */
const NODE_KEEPALIVE_BUFFER = 1000
/** The keepalive_timeout a server's idle sockets are to get, where Node would add its buffer. */
const EXACT_KEEPALIVE = Symbol('gatehouse.keepalive')
type KeepAliveServer = Server & { keepAliveTimeoutBuffer?: number; [EXACT_KEEPALIVE]?: number }

/**
 * keepalive_timeout as the real figure. Node keeps an idle socket open keepAliveTimeout plus
 * a buffer (1 s), so "1s" closed after 2 s: newer Node has server.keepAliveTimeoutBuffer,
 * set to 0; on older ones (no such property) the socket's timeout is set again once a
 * response has finished (exactKeepAlive), after Node set its own.
 */
function applyKeepAlive(server: KeepAliveServer, ms: number): void {
  server.keepAliveTimeout = ms
  if (typeof server.keepAliveTimeoutBuffer === 'number') server.keepAliveTimeoutBuffer = 0
  else server[EXACT_KEEPALIVE] = ms
}

/** A 'request' / 'checkContinue' listener: see applyKeepAlive. */
function exactKeepAlive(server: KeepAliveServer) {
  return (req: IncomingMessage, res: ServerResponse) => {
    if (server[EXACT_KEEPALIVE] === undefined) return
    // Node's own 'finish' listener (resOnFinish) was added before the request was emitted,
    // so it has run when this one does: replace its timeout, not anything else.
    res.once('finish', () => {
      const socket = req.socket as (typeof req.socket & { timeout?: number }) | null
      const ms = server[EXACT_KEEPALIVE]
      if (
        socket &&
        ms &&
        !socket.destroyed &&
        socket.timeout === server.keepAliveTimeout + NODE_KEEPALIVE_BUFFER
      )
        socket.setTimeout(ms)
    })
  }
}

function applyLimits(server: Server, limits: LimitsConfig): void {
  server.headersTimeout = limits.header_timeout
  server.requestTimeout = limits.request_timeout
  applyKeepAlive(server, limits.keepalive_timeout)
  server.maxRequestsPerSocket = limits.max_requests_per_connection || null
  // One more than the limit so that an excess is seen (and refused with 431) rather than
  // silently dropped, which is what node does with headers past maxHeadersCount.
  server.maxHeadersCount = limits.max_headers + 1
}

/** Status for the parse errors node's HTTP parser (llhttp) reports through 'clientError'. */
function clientErrorCode(code: string | undefined): ErrorCode {
  switch (code) {
    case 'HPE_HEADER_OVERFLOW':
      return 'GH_ERR_HEADERS_TOO_LARGE'
    case 'ERR_HTTP_REQUEST_TIMEOUT':
      return 'GH_ERR_HEADER_TIMEOUT'
    case 'HPE_CHUNK_EXTENSIONS_OVERFLOW':
      return 'GH_ERR_BODY_TOO_LARGE'
    case 'HPE_INVALID_TRANSFER_ENCODING':
    case 'HPE_UNEXPECTED_CONTENT_LENGTH':
      return 'GH_ERR_TRANSFER_ENCODING'
    default:
      return 'GH_ERR_BAD_REQUEST'
  }
}

/** How a Gatehouse runs beside others (front_processes > 1: src/fronts/). */
export interface GatehouseOptions {
  /** Where each route's pool lives, by its key (its action, table and occurrence). */
  poolSite?: (key: string) => PoolSite
  /**
   * This Gatehouse is front thread N: its pools are the main thread's, and the app-side
   * listeners and ACME stay with the main thread.
   */
  front?: number
  /** Told of each configuration switched to; the old handlers close once this settles. */
  swapped?: (config: GatehouseConfig) => Promise<unknown>
}

export class Gatehouse {
  readonly logs: Logs
  private state: State
  private readonly listeners: Listener[] = []
  private inFlight = 0
  /** Requests this front has taken (HTTP and the app-side listeners'): the fronts' split. */
  private served = 0
  private closing = false
  private isDraining = false
  private endDelay: (() => void) | null = null
  private drained: (() => void) | null = null
  /** Replaced states whose handlers close once their in-flight requests end. */
  private readonly retiring = new Set<Promise<void>>()
  /** States built by reloads whose pools are still starting (at most one is not superseded). */
  private readonly pending = new Set<State>()
  private readonly requestsOnSocket = new WeakMap<object, number>()
  /** Open connections per client address, counted while max_connections_per_ip is set. */
  private readonly connectionsPerIp = new Map<string, number>()
  /** Sockets handed to a handler's upgrade() (WebSockets), until they close. */
  private readonly upgraded = new Set<Duplex>()
  /** Per connection, its bytesRead when the metrics last counted it (request heads included). */
  private readonly countedRead = new WeakMap<object, number>()
  /** Prometheus metrics: counted while some route shows them (State.metricsOn). */
  readonly metrics = new Metrics(
    () =>
      Promise.all(
        this.listeners.map(
          (l) => new Promise<number>((resolve) => l.server.getConnections((err, n) => resolve(err ? 0 : n))),
        ),
      ).then((counts) => counts.reduce((a, b) => a + b, 0)),
    () => this.upgraded.size,
  )
  /**
   * The gateways' app-side listeners (`uwsgi_listen`, `fastcgi_listen`), by gateway name:
   * requests arriving over those protocols take the same path as HTTP ones.
   */
  private readonly inboundListeners = new Map<string, InboundListeners>()
  /** Automatic certificates, while some listener names ACME hosts. */
  private acme: AcmeCertificates | undefined

  /** The front threads beside this one (set by `gatehouse serve` with front_processes > 1). */
  fronts: FrontGroup | undefined

  /** In a front thread: pages the main thread renders (ServerState.relay; set by src/fronts/thread.ts). */
  relay: ((route: number, query: string) => Promise<RenderedPage>) | undefined

  /** Route `route`'s page for `query` (a front thread's relay asks this of the main thread). */
  async renderRoute(route: number, query: string): Promise<RenderedPage> {
    const handler = this.state.handlers[route]
    if (!handler?.render) return { status: 404, headers: {}, body: 'no such page\n' }
    return handler.render(query)
  }

  /** A node:http request listener: usable in `http.createServer`, Express, Fastify's raw handler. */
  readonly handler: (req: IncomingMessage, res: ServerResponse) => void

  constructor(
    config: GatehouseConfig,
    private readonly options: GatehouseOptions = {},
  ) {
    this.logs = new Logs(config.log)
    this.state = buildState(config, this.logs, this, undefined, options.poolSite)
    this.handler = (req, res) => this.handle(req, res)
    if (options.front === undefined) {
      this.addInboundListeners()
      this.syncAcme(config)
    }
  }

  /** The ACME hosts of `config` managed from now on (their certificates read from storage). */
  private syncAcme(config: GatehouseConfig): void {
    const listen = [config.listen].flat()
    const hosts = allAcmeHosts(listenAcmeHosts(listen, config.routes))
    const settings = { ...config.acme, challenges: usableChallenges(listen, config.acme.challenges) }
    if (hosts.length === 0) {
      this.acme?.close()
      this.acme = undefined
    } else if (this.acme) this.acme.update(settings, hosts)
    else this.acme = new AcmeCertificates(settings, hosts, this.logs.error)
  }

  /** The ACME hosts' state (the control API's status): names, expiry, failures in a row. */
  acmeStatus() {
    return this.acme?.status() ?? []
  }

  /** The app-side listeners of the gateways loaded so far (a reload may load more). */
  private addInboundListeners(): void {
    if (this.options.front !== undefined) return
    for (const gateway of loadedGateways()) {
      if (gateway.listener && !this.inboundListeners.has(gateway.name))
        this.inboundListeners.set(
          gateway.name,
          new InboundListeners(gateway.listener, this.handler, this.logs.error),
        )
    }
  }

  get config(): GatehouseConfig {
    return this.state.config
  }

  /** Open every configured listener. A busy address fails with GH_ERR_LISTEN naming it. */
  async listen(): Promise<ListeningAddress[]> {
    // Managed workers (php-cgi pools) are up before the first request can arrive; a pool
    // that cannot start fails here with GH_ERR_WORKER_START.
    const certificates = loadListenTls(this.state.config.listen)
    const acmeHosts = listenAcmeHosts(this.state.config.listen, this.state.config.routes)
    await this.ready()
    for (const [i, entry] of this.state.config.listen.entries()) {
      const { address, redirect } = listenEntry(entry)
      const h2 = wantsHttp2(entry, this.state.config)
      await this.openListener(parseListenAddress(address), certificates[i], redirect, acmeHosts[i], h2)
    }
    for (const listeners of this.inboundListeners.values()) await listeners.reconcile(this.state.config)
    // Orders run in the background: every listener is open and serving already.
    this.acme?.start()
    return this.addresses()
  }

  /**
   * The listening sockets front threads share (src/fronts/), by listen entry: a key (the
   * address as configured) and the socket's handle. Listeners whose certificates ACME
   * manages stay with this thread (the orders and their state live here).
   */
  sharedListeners(): { entry: number; key: string; handle: unknown }[] {
    const out: { entry: number; key: string; handle: unknown }[] = []
    this.state.config.listen.forEach((entry, i) => {
      const text = parseListenAddress(listenEntry(entry).address).text
      const l = this.listeners.find((x) => x.spec.text === text)
      if (!l || (l.tls?.acme.length ?? 0) > 0) return
      out.push({ entry: i, key: text, handle: (l.server as unknown as { _handle: unknown })._handle })
    })
    return out
  }

  /** Resolves when every handler can serve (managed worker pools started). */
  async ready(): Promise<void> {
    await Promise.all(this.state.handlers.map((h) => h.ready?.()))
  }

  /**
   * SIGUSR2: every managed pool replaces its workers (rolling by default, docs/process-manager.md).
   * `actions` (`['wsgi', 'asgi']` for --reload) limits it to the routes of those actions.
   */
  async reloadWorkers(actions?: readonly string[]): Promise<void> {
    const { config, handlers } = this.state
    const chosen = handlers.filter(
      (_, i) =>
        actions === undefined ||
        actions.some((a) => (config.routes[i] as Record<string, unknown>)[a] !== undefined),
    )
    await Promise.all(chosen.map((h) => h.reloadWorkers?.()))
  }

  /**
   * The rolling restart of one route's pool (the control API's `POST /control/pools/N/reload`):
   * `false` when routes[index] does not exist or manages no workers.
   */
  async reloadRouteWorkers(index: number): Promise<boolean> {
    const handler = this.state.handlers[index]
    if (!handler?.reloadWorkers) return false
    await handler.reloadWorkers()
    return true
  }

  /** Whether routes[index] of the serving config manages workers (has a pool to reload). */
  routeManagesWorkers(index: number): boolean {
    return this.state.handlers[index]?.reloadWorkers !== undefined
  }

  /** The front's own figures now, for the control API's GET /status. */
  async frontStatus(): Promise<{
    in_flight: number
    open_connections: number
    websockets: number
    draining: boolean
    inbound: Record<string, { address: string; connections: number; requests: number }[]>
  }> {
    const counts = await Promise.all(
      this.listeners.map(
        (l) => new Promise<number>((resolve) => l.server.getConnections((err, n) => resolve(err ? 0 : n))),
      ),
    )
    return {
      in_flight: this.inFlight,
      open_connections: counts.reduce((a, b) => a + b, 0),
      websockets: this.upgraded.size,
      draining: this.isDraining,
      inbound: Object.fromEntries([...this.inboundListeners].map(([name, l]) => [name, l.stats()])),
    }
  }

  /** This front thread's figures, for the main thread to sum (src/fronts/). */
  async frontFigures(index: number): Promise<FrontFigures> {
    const s = await this.frontStatus()
    return {
      index,
      requests: this.served,
      inFlight: s.in_flight,
      openConnections: s.open_connections,
      metrics: this.state.metricsOn ? await this.metrics.registry.getMetricsAsJSON() : [],
    }
  }

  /** The bound addresses of a gateway's app-side listeners (`uwsgi`: `uwsgi_listen`), in config order. */
  listenerAddresses(gateway: string): ListeningAddress[] {
    return this.inboundListeners.get(gateway)?.addresses() ?? []
  }

  /** Connections and requests each of a gateway's app-side listeners has accepted, in config order. */
  listenerStats(gateway: string): { address: string; connections: number; requests: number }[] {
    return this.inboundListeners.get(gateway)?.stats() ?? []
  }

  /** The bound `uwsgi_listen` addresses (listenerAddresses('uwsgi'), kept for existing callers). */
  uwsgiAddresses(): ListeningAddress[] {
    return this.listenerAddresses('uwsgi')
  }

  /** The bound `fastcgi_listen` addresses (listenerAddresses('fastcgi'), kept for existing callers). */
  fastcgiAddresses(): ListeningAddress[] {
    return this.listenerAddresses('fastcgi')
  }

  /** Connections and requests per `fastcgi_listen` listener (listenerStats('fastcgi'), kept for existing callers). */
  fastcgiStats(): { address: string; connections: number; requests: number }[] {
    return this.listenerStats('fastcgi')
  }

  addresses(): ListeningAddress[] {
    return this.listeners.map((l) => l.bound)
  }

  private async openListener(
    spec: ListenAddress,
    certificates?: LoadedTls,
    redirectTo?: true | number,
    acmeHosts: string[] = [],
    http2 = false,
  ): Promise<void> {
    const limits = this.state.config.limits
    // node:https shares node:http's request handling: every listener below works on a TLSSocket.
    const tls = certificates ? { loaded: certificates, acme: acmeHosts } : undefined
    const redirect = !tls && redirectTo !== undefined ? { to: redirectTo } : undefined
    const toHttps =
      redirect &&
      redirectToHttps(() =>
        redirect.to === true ? (this.listeners.find((l) => l.tls)?.bound.port ?? 443) : redirect.to,
      )
    // ACME's HTTP-01 answers come before the redirect (the CA fetches them over plain HTTP).
    const handler = toHttps
      ? (req: IncomingMessage, res: ServerResponse) => {
          if (!this.acme?.answerHttpChallenge(req, res)) toHttps(req, res)
        }
      : this.handler
    const alpn = http2 ? ['h2', 'http/1.1'] : ['http/1.1']
    const server: Server = tls
      ? (createTlsServer(
          {
            ...serverOptions(limits),
            ...tls.loaded.defaults,
            SNICallback: acmeSniCallback(
              () => this.acme,
              () => tls.acme,
              (name) => chooseCertificate(tls.loaded, name),
            ),
            // RFC 7301: h2 first when HTTP/2 is on; a client offering only http/1.1 (a
            // WebSocket client) gets HTTP/1.1 on the same port. TLS-ALPN-01 (RFC 8737) needs
            // the client's ALPN list before the certificate is chosen: then a callback (Node
            // refuses ALPNProtocols beside it) picks from the same list.
            ...(tls.acme.length > 0
              ? { ALPNCallback: acmeAlpnCallback(() => this.acme, alpn) }
              : { ALPNProtocols: alpn }),
          },
          handler,
        ) as TlsServer as unknown as Server)
      : createServer(serverOptions(limits), handler)
    applyLimits(server, limits)
    // HSTS (RFC 6797 7.2: only over TLS) on every response of this listener, set before any handler runs.
    const hsts = (_req: IncomingMessage, res: ServerResponse) => {
      if (tls?.loaded.hsts) res.setHeader('strict-transport-security', tls.loaded.hsts)
    }
    if (tls) {
      server.prependListener('request', hsts)
      server.prependListener('checkContinue', hsts)
    }
    // HTTP/2 connections go to their own sessions; the rest stay on this server (src/http/h2.ts).
    let h2: Http2Front | undefined
    if (http2 && !redirect) {
      // Imported with the first HTTP/2 listener: node:http2 is ~3 MB an HTTP/1.1-only server does not need.
      const { Http2Front } = await import('./http/h2.js')
      h2 = new Http2Front(
        this.state.config.http2,
        http2Limits(limits),
        (req, res) => {
          hsts(req, res)
          this.handle(req, res)
        },
        (req, res) => {
          hsts(req, res)
          this.handle(req, res, true)
        },
        this.logs.error,
      )
      h2.attach(server, tls !== undefined, limits.header_timeout)
    }
    // The per-connection bookkeeping keys on the socket requests arrive on: the TLSSocket.
    server.on(tls ? 'secureConnection' : 'connection', (socket: Socket) => this.countConnection(socket))
    server.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex) => this.onClientError(err, socket))
    // A redirect listener answers everything itself (no 100 Continue: the body is not wanted).
    server.on('checkContinue', (req: IncomingMessage, res: ServerResponse) =>
      redirect ? handler(req, res) : this.handle(req, res, true),
    )
    const keepAlive = exactKeepAlive(server)
    server.on('request', keepAlive)
    server.on('checkContinue', keepAlive)
    // Without a listener node drops CONNECT connections without a word; no route can serve it.
    // node has taken its own error listener off the socket by now: a reset must not throw.
    server.on('connect', (_req: IncomingMessage, socket: Duplex) => {
      socket.on('error', () => socket.destroy())
      endWithStatus(socket, 501)
    })
    server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
      if (!redirect) this.handleUpgrade(req, socket, head)
      else {
        if (head.length > 0) socket.unshift(head)
        handler(req, upgradeResponse(req, socket))
      }
    })
    const bound: ListeningAddress = await bindServer(
      server,
      spec,
      undefined,
      this.state.config.limits.backlog,
    )
    if (tls) bound.tls = true
    server.on('error', (err) => this.logs.error.error({ err, listen: spec.text }, 'listener error'))
    this.listeners.push({ spec, server, bound, tls, redirect, h2 })
    // JSON keeps msg "listening" and `listen` last (tools and tests match on them) and adds
    // `url`; text says where to click.
    const url = listenUrl(bound)
    if (!this.logs.text) this.logs.error.info({ url, listen: bound.address }, 'listening')
    else if (url === bound.address || url === `http://${bound.address}` || url === `https://${bound.address}`)
      this.logs.error.info(`listening on ${url}`)
    else this.logs.error.info({ listen: bound.address }, `listening on ${url}`)
  }

  /**
   * limits.max_connections_per_ip (nginx's limit_conn): a connection past the limit is let
   * in only so that its request can be answered 503 (a closed socket would read as a
   * network failure); it is not counted, and closes after that answer.
   */
  private countConnection(socket: Socket): void {
    const max = this.state.config.limits.max_connections_per_ip
    if (max <= 0) return
    const ip = socket.remoteAddress ?? ''
    const open = this.connectionsPerIp.get(ip) ?? 0
    if (open >= max) {
      ;(socket as Socket & { [OVER_LIMIT]?: true })[OVER_LIMIT] = true
      return
    }
    this.connectionsPerIp.set(ip, open + 1)
    socket.once('close', () => {
      const left = (this.connectionsPerIp.get(ip) ?? 1) - 1
      if (left > 0) this.connectionsPerIp.set(ip, left)
      else this.connectionsPerIp.delete(ip)
    })
  }

  /** Bytes read on a connection since the metrics last looked: its requests' heads and bodies. */
  private bytesReadSince(req: IncomingMessage): number {
    const socket = req.socket as Socket | null
    if (!socket) return 0
    const now = socket.bytesRead
    // HTTP/2: req.socket is a proxy per stream onto the session's socket; count by session.
    const key = connectionOf(req)!
    const before = this.countedRead.get(key) ?? 0
    this.countedRead.set(key, now)
    return now - before
  }

  /** A 413 of ours: the log names the setting that refused the body, so it can be raised. */
  private logBodyRefused(req: IncomingMessage, state: State, routeIndex: number | undefined): void {
    const route = routeIndex === undefined ? undefined : state.config.routes[routeIndex]
    const own = route?.max_body_bytes !== undefined
    this.logs.error.warn(
      {
        method: req.method,
        uri: req.url,
        code: 'GH_ERR_BODY_TOO_LARGE',
        content_length: req.headers['content-length'],
        limit: own ? route.max_body_bytes : state.config.limits.max_body_bytes,
        setting: own ? `routes[${routeIndex}].max_body_bytes` : 'limits.max_body_bytes (--max-body-size)',
      },
      'request body over the limit: 413',
    )
  }

  /** A request on a connection past max_connections_per_ip: 503, and the connection closes. */
  private refuseOverLimit(res: ServerResponse): void {
    this.logs.error.debug(
      { code: 'GH_ERR_CONN_LIMIT', remote: res.req?.socket?.remoteAddress },
      'request refused',
    )
    sendError(res, 'GH_ERR_CONN_LIMIT', { close: true, headers: { 'retry-after': '1' } })
  }

  private onClientError(err: NodeJS.ErrnoException, socket: Duplex): void {
    const httpMessage = (socket as Duplex & { _httpMessage?: ServerResponse })._httpMessage
    if (err.code === 'ECONNRESET' || !socket.writable || httpMessage?.headersSent) {
      socket.destroy()
      return
    }
    const code = clientErrorCode(err.code)
    const status = ERROR_CODES[code].status ?? 400
    this.logs.error.debug({ code, parser: err.code, status }, 'request refused')
    endWithStatus(socket, status)
  }

  private handle(req: IncomingMessage, res: ServerResponse, expectsContinue = false): void {
    const state = this.state
    const start = performance.now()
    const conn = connectionInfo(req)
    const remoteAddress = conn.remoteAddress
    const written0 = req.socket?.bytesWritten ?? 0
    const body = this.logs.accessEnabled ? countBody(res) : undefined
    this.inFlight++
    this.served++
    state.active++
    let routeIndex: number | undefined
    // on, not once (a response closes once): once would wrap the listener in one more closure.
    res.on('close', () => {
      this.inFlight--
      if (--state.active === 0) state.onIdle?.()
      if (this.logs.accessEnabled) {
        this.logs.access({ req, res, remoteAddress, start, route: routeIndex, written0, body })
      }
      if (state.metricsOn)
        this.metrics.observe({
          route: routeIndex === undefined ? 'none' : state.routeLabels[routeIndex]!,
          method: req.method ?? 'OTHER',
          status: res.statusCode,
          seconds: (performance.now() - start) / 1000,
          bytesIn: this.bytesReadSince(req),
          bytesOut: (req.socket?.bytesWritten ?? 0) - written0,
        })
      if ((res as ServerResponse & { [BODY_REFUSED]?: true })[BODY_REFUSED])
        this.logBodyRefused(req, state, routeIndex)
      if (this.closing) {
        for (const l of this.listeners) l.server.closeIdleConnections()
        if (this.inFlight === 0) this.drained?.()
      }
    })
    if (this.closing) res.setHeader('connection', 'close')
    const session = http2Session(req)
    if (overLimit(req.socket)) {
      this.refuseOverLimit(res)
      // HTTP/2: the refusal ends only its stream; GOAWAY ends the connection after it.
      session?.close()
      return
    }
    // ACME HTTP-01 (RFC 8555 8.3): a pending token is answered before any route.
    if (this.acme && !(req.socket as TLSSocket).encrypted && this.acme.answerHttpChallenge(req, res)) return
    // node's maxRequestsPerSocket sends `Connection: close` on the last allowed response but
    // leaves the connection open (and answers 503 to what follows): close it for real.
    // HTTP/2: GOAWAY after that many streams (nginx's keepalive_requests).
    const maxPerConnection = state.config.limits.max_requests_per_connection
    const connection = session ?? req.socket
    if (maxPerConnection > 0 && connection) {
      const served = (this.requestsOnSocket.get(connection) ?? 0) + 1
      this.requestsOnSocket.set(connection, served)
      if (served >= maxPerConnection) {
        res.shouldKeepAlive = false
        session?.close()
      }
    }
    const parsed = parseRequest(req, state.config.limits.max_headers, conn)
    if (typeof parsed === 'string') {
      refuse(res, parsed, this.logs.error)
      return
    }
    const { method } = parsed
    const match = state.router.match(parsed.host, parsed.target.path, method)
    if (match.kind === 'not_found') {
      sendStatus(res, 404, { head: method === 'HEAD' })
      return
    }
    if (match.kind === 'method_not_allowed') {
      sendStatus(res, 405, { headers: { allow: match.allow.join(', ') }, head: method === 'HEAD' })
      return
    }
    if (match.target.internal) {
      sendStatus(res, 404, { head: method === 'HEAD' })
      return
    }
    routeIndex = match.index
    const { handler, maxBodyBytes } = match.target
    const contentLength = req.headers['content-length']
    if (contentLength !== undefined && Number(contentLength) > maxBodyBytes) {
      refuse(res, 'GH_ERR_BODY_TOO_LARGE', this.logs.error)
      return
    }
    if (expectsContinue) {
      if (handler.deferContinue)
        (res as ServerResponse & { [CONTINUE_DEFERRED]?: boolean })[CONTINUE_DEFERRED] = true
      else res.writeContinue()
    }
    if (match.target.encode) encodeResponse(req, res, match.target.encode)
    if (match.target.offload) this.offload(req, res, parsed, match.target.offload, state)
    const route = { index: match.index, prefix: match.prefix, params: match.params }
    runHandler(handler, buildContext(req, res, parsed, route, maxBodyBytes, this.logs.error))
  }

  /** X-Sendfile and X-Accel-Redirect in the app's head: the file served instead (http/offload.ts). */
  private offload(
    req: IncomingMessage,
    res: ServerResponse,
    parsed: ParsedRequest,
    target: NonNullable<RouteEntry['offload']>,
    state: State,
  ): void {
    const log = this.logs.error
    // The file is fetched as nginx's internal redirect does: GET (HEAD stays HEAD).
    const method = parsed.method === 'HEAD' ? 'HEAD' : 'GET'
    const serve = (handler: Handler, path: ParsedRequest['target'], route: RouteMatch, maxBody: number) =>
      runHandler(handler, buildContext(req, res, { ...parsed, method, target: path }, route, maxBody, log))
    offloadResponse(
      req,
      res,
      {
        ...(target.files
          ? {
              root: target.root!,
              serveFile: (rel: string) =>
                serve(
                  target.files!,
                  { rawPath: rel, path: rel, query: '' },
                  { index: -1, prefix: '', params: [] },
                  0,
                ),
            }
          : {}),
        ...(target.accel
          ? {
              redirect: (uri: string) => {
                let path: ParsedRequest['target']
                try {
                  path = parseTarget(uri)
                } catch {
                  return false
                }
                const m = state.router.match(parsed.host, path.path, method)
                if (m.kind !== 'found' || !m.target.internal) return false
                serve(
                  m.target.handler,
                  path,
                  { index: m.index, prefix: m.prefix, params: m.params },
                  m.target.maxBodyBytes,
                )
                return true
              },
            }
          : {}),
      },
      log,
    )
  }

  /**
   * An `Upgrade:` request (WebSocket): routed like any request; a handler with `upgrade()`
   * takes the socket, any other serves it as plain HTTP on a response put back on the
   * socket (the connection closes after it).
   */
  private handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    const res = upgradeResponse(req, socket)
    if (overLimit(socket)) {
      this.handle(req, res)
      return
    }
    const state = this.state
    const parsed = parseRequest(req, state.config.limits.max_headers)
    const match =
      typeof parsed === 'string' ? null : state.router.match(parsed.host, parsed.target.path, parsed.method)
    if (
      typeof parsed === 'string' ||
      match?.kind !== 'found' ||
      !match.target.handler.upgrade ||
      match.target.internal
    ) {
      if (head.length > 0) socket.unshift(head)
      this.handle(req, res)
      return
    }
    if (this.closing) {
      sendStatus(res, 503, {})
      return
    }
    const { handler, maxBodyBytes } = match.target
    const route = { index: match.index, prefix: match.prefix, params: match.params }
    const ctx = buildContext(req, res, parsed, route, maxBodyBytes, this.logs.error)
    this.upgraded.add(socket)
    socket.once('close', () => this.upgraded.delete(socket))
    const start = performance.now()
    const remoteAddress = connectionInfo(req).remoteAddress
    const body = this.logs.accessEnabled ? countBody(res) : undefined
    socket.once('close', () => {
      if (this.logs.accessEnabled)
        this.logs.access({ req, res, remoteAddress, start, route: match.index, written0: 0, body })
    })
    try {
      const result = handler.upgrade!(ctx, socket, head)
      if (result)
        result.catch((err: unknown) => {
          this.logs.error.error({ err, uri: req.url }, 'upgrade failed')
          if (!res.headersSent && !socket.destroyed) sendStatus(res, 500, {})
          else socket.destroy()
        })
    } catch (err) {
      this.logs.error.error({ err, uri: req.url }, 'upgrade failed')
      socket.destroy()
    }
  }

  /**
   * Apply a new configuration: routes, handlers, logging level and limits switch at once
   * for new requests; in-flight requests finish on the old handlers, which are closed after.
   * Listen addresses are diffed: new ones opened, removed ones closed.
   *
   * Reloads may overlap (SIGHUP while the previous config's pools still start): the newest
   * wins, and a reload whose pools were still starting when a newer one came is superseded:
   * its pools are stopped at once and it resolves `false`. Every replaced state is closed
   * once (issue 18: overlapping reloads left whole old pools running). Resolves `true` once
   * the new configuration serves.
   *
   * `rollKept: false` (the control API): a kept pool keeps its workers; by default (SIGHUP)
   * they are replaced a few at a time, to pick up the app's new code.
   */
  async reload(
    input: GatehouseConfigInput,
    baseDir?: string,
    options: { rollKept?: boolean } = {},
  ): Promise<boolean> {
    // A reloaded config may name a gateway the running one did not (the command line loads
    // only those its config uses).
    await loadConfigGateways(input, baseDir)
    this.addInboundListeners()
    return this.apply(validateConfig(input, baseDir), options)
  }

  /**
   * reload() of a configuration validated already: what a front thread gets from the main
   * thread (src/fronts/), which validated it.
   */
  async apply(config: GatehouseConfig, options: { rollKept?: boolean } = {}): Promise<boolean> {
    // Certificates re-read (renewed ones on disk are served); a bad one keeps the old configuration.
    const certificates = loadListenTls(config.listen)
    const acmeHosts = listenAcmeHosts(config.listen, config.routes)
    if (this.closing) return false
    for (const pending of this.pending) this.discard(pending, 'a newer reload came while its pools started')
    const next = buildState(config, this.logs, this, this.state, this.options.poolSite)
    this.pending.add(next)
    // New managed workers are up before requests switch to them; if they cannot start,
    // the old configuration stays.
    try {
      // A kept handler serves already (and is rolled after the switch).
      await Promise.all(next.handlers.filter((h) => !next.reused.includes(h)).map((h) => h.ready?.()))
    } catch (err) {
      if (next.superseded) return false
      this.pending.delete(next)
      await this.closeHandlers(next)
      throw err
    }
    if (next.superseded) return false
    this.pending.delete(next)
    if (this.closing) {
      await this.closeHandlers(next)
      return false
    }
    // The state replaced is the one serving now (not the one serving when this reload began).
    const old = this.state
    this.state = next
    this.logs.error.level = config.log.level
    if (config.limits.max_header_bytes !== old.config.limits.max_header_bytes) {
      this.logs.error.warn('limits.max_header_bytes changes take effect on restart')
    }
    if (config.front_processes !== old.config.front_processes && this.options.front === undefined) {
      this.logs.error.warn('front_processes changes take effect on restart')
    }
    for (const l of this.listeners) {
      applyLimits(l.server, config.limits)
      l.h2?.update(config.http2, http2Limits(config.limits))
    }
    if (this.listeners.length > 0) {
      const wanted = config.listen.map((entry, i) => {
        const e = listenEntry(entry)
        const h2 = wantsHttp2(entry, config) && e.redirect === undefined
        const acme = acmeHosts[i]!
        return { spec: parseListenAddress(e.address), tls: certificates[i], acme, redirect: e.redirect, h2 }
      })
      // Kept: same address, TLS (with ACME or not) on both or neither, HTTP/2 on both or neither (a switch reopens the listener).
      const keep = (l: Listener) =>
        wanted.some(
          (w) =>
            w.spec.text === l.spec.text &&
            listenerKind(w) === listenerKind({ ...l, acme: l.tls?.acme ?? [] }),
        )
      for (const l of [...this.listeners]) {
        if (!keep(l)) {
          this.listeners.splice(this.listeners.indexOf(l), 1)
          l.server.close()
          l.server.closeIdleConnections()
          l.h2?.goAway()
        }
      }
      for (const w of wanted) {
        const kept = this.listeners.find((l) => l.spec.text === w.spec.text)
        if (!kept) await this.openListener(w.spec, w.tls, w.redirect, w.acme, w.h2)
        else if (kept.redirect && w.redirect !== undefined) kept.redirect.to = w.redirect
        else if (kept.tls && w.tls) {
          // New handshakes get the certificates read above; open connections keep theirs.
          ;(kept.server as unknown as TlsServer).setSecureContext(w.tls.defaults)
          kept.tls.loaded = w.tls
          kept.tls.acme = w.acme
        }
      }
      for (const listeners of this.inboundListeners.values()) await listeners.reconcile(config)
    }
    // Certificates already obtained stay; new hosts are read from storage or ordered.
    if (this.options.front === undefined) this.syncAcme(config)
    if (this.listeners.length > 0) this.acme?.start()
    // Front threads switch too; the old pools serve them until they have.
    const switched = this.options.swapped?.(config) ?? Promise.resolve()
    // The old handlers finish what they have in flight before they are closed; reload
    // itself does not wait for that (a long download must not hold up the next reload).
    const retired: Promise<void> = this.retire(old, switched).finally(() => this.retiring.delete(retired))
    this.retiring.add(retired)
    // A kept pool serves on; its workers are replaced a few at a time (the app's new code).
    for (const h of options.rollKept === false ? [] : next.reused) {
      h.reloadWorkers!().catch((err: unknown) =>
        this.logs.error.error(
          { err },
          'reload: a kept pool could not replace its workers; the old ones serve',
        ),
      )
    }
    return true
  }

  /** Close a state's handlers, except those a live or pending state still uses (reused). */
  private closeHandlers(state: State): Promise<void> {
    const live = new Set([...this.state.handlers, ...[...this.pending].flatMap((p) => p.handlers)])
    return Promise.allSettled(state.handlers.filter((h) => !live.has(h)).map((h) => h.close?.())).then(
      () => {},
    )
  }

  /** A reload's state that will never serve: its pools (maybe still starting) are stopped now. */
  private discard(state: State, why: string): void {
    state.superseded = true
    this.pending.delete(state)
    this.logs.error.info({ why }, 'reload superseded: stopping the pools it started')
    const closed: Promise<void> = this.closeHandlers(state).finally(() => this.retiring.delete(closed))
    this.retiring.add(closed)
  }

  private async retire(old: State, switched: Promise<unknown>): Promise<void> {
    if (old.active > 0) await new Promise<void>((resolve) => (old.onIdle = resolve))
    await switched.catch(() => {})
    await this.closeHandlers(old)
  }

  /**
   * Graceful stop: stop accepting, let in-flight requests finish within the grace period
   * (keep-alive connections are closed as they go idle), then close what remains.
   */
  /** SIGUSR1: reopen log files after rotation. */
  reopenLogs(): void {
    this.logs.reopen()
  }

  /** Stopping, in shutdown_delay: readiness checks answer 503 while requests are still served. */
  get draining(): boolean {
    return this.isDraining
  }

  /**
   * `delayMs` (shutdown_delay by default): first serve on that long with readiness checks
   * answering 503, so a load balancer stops sending before the listeners close. A second
   * close() during the delay (a second signal) goes on at once.
   */
  async close(
    graceMs: number = this.state.config.shutdown_grace,
    delayMs: number = this.state.config.shutdown_delay,
  ): Promise<void> {
    if (this.closing) return
    if (this.isDraining) {
      this.endDelay?.()
      return
    }
    this.isDraining = true
    if (delayMs > 0 && this.listeners.length > 0) {
      this.logs.error.info(
        { shutdown_delay_ms: delayMs },
        'draining: readiness checks answer 503; the listeners close after shutdown_delay',
      )
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, delayMs)
        this.endDelay = () => {
          clearTimeout(timer)
          resolve()
        }
      })
    }
    if (this.closing) return
    this.closing = true
    this.acme?.close()
    for (const pending of this.pending) this.discard(pending, 'the server is stopping')
    const closed = this.listeners.map((l) => new Promise<void>((resolve) => l.server.close(() => resolve())))
    for (const listeners of this.inboundListeners.values()) closed.push(listeners.stopAccepting())
    for (const l of this.listeners) {
      l.server.closeIdleConnections()
      // HTTP/2: GOAWAY on every session; its open streams finish within the grace.
      l.h2?.goAway()
    }
    if (this.inFlight > 0) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, graceMs)
        timer.unref()
        this.drained = () => {
          clearTimeout(timer)
          resolve()
        }
      })
    }
    for (const l of this.listeners) {
      l.server.closeAllConnections()
      l.h2?.destroyAll()
    }
    for (const listeners of this.inboundListeners.values()) listeners.closeAll()
    // Upgraded connections (WebSockets) keep the listeners open until their handlers close
    // them (with a close frame); whatever is left after that is cut.
    await Promise.all([
      Promise.all(closed),
      Promise.allSettled([...this.retiring, ...this.state.handlers.map((h) => h.close?.())]).then(() => {
        for (const socket of this.upgraded) socket.destroy()
      }),
    ])
    this.logs.flush()
  }
}

/** A complete response written straight to a socket that has no usable HTTP framing left, then close. */
function endWithStatus(socket: Duplex, status: number): void {
  const body = `${status} ${reasonPhrase(status)}\n`
  socket.end(
    `HTTP/1.1 ${status} ${reasonPhrase(status)}\r\nConnection: close\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: ${body.length}\r\n\r\n${body}`,
  )
  setTimeout(() => socket.destroy(), 1000).unref()
}

/**
 * Create a Gatehouse from a configuration object (the same schema as the config file).
 * Throws GatehouseError GH_ERR_CONFIG listing every problem. Relative paths resolve
 * against `baseDir` (default: the working directory).
 */
export function createGatehouse(config: GatehouseConfigInput, options: { baseDir?: string } = {}): Gatehouse {
  return new Gatehouse(validateConfig(config, options.baseDir))
}
