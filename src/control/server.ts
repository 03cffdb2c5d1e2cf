/*
 * The live control API (issue 16, docs/control-api.md): NGINX Unit's REST API for a running
 * Gatehouse, on a Unix socket by default. `/config/...` reads and changes the configuration
 * as given (ConfigStore applies it through Gatehouse.reload), `/status` and `/metrics`
 * show what the status pages and the `metrics` action show, `/control/pools/N/reload`
 * rolls one route's workers. Plain node:http: a few routes need no framework.
 */
import { createHash, timingSafeEqual } from 'node:crypto'
import { chmodSync } from 'node:fs'
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { Logger } from 'pino'
import type { ControlConfig } from '../config/schema.js'
import { type ListenAddress, parseListenAddress } from '../core/address.js'
import { type BoundAddress, bindServer } from '../core/bind.js'
import { ERROR_CODES, GatehouseError, isGatehouseError } from '../core/errors.js'
import type { Gatehouse } from '../gatehouse.js'
import { allPoolsJson } from '../gateways/status/action.js'
import { upstreamStats } from '../core/upstream/registry.js'
import { addPoolMetrics } from '../gateways/status/pool-metrics.js'
import { appendAt, configPath, deleteAt, getAt, type Json, putAt } from './config-tree.js'
import type { GatehouseConfigInput } from '../config.js'
import { ConfigStore, fingerprint, TOKEN_ENV } from './state.js'

/** The environment variable a token may come from (for `gatehouse serve` and `gatehouse ctl`). */
export { TOKEN_ENV }

/** A configuration is a few kilobytes; this bounds what one request may make us buffer. */
const MAX_BODY_BYTES = 16 * 1024 * 1024

export interface ControlSettings {
  spec: ListenAddress
  token: string | undefined
  mode: number
}

/** 127.0.0.0/8, ::1 and `localhost`: addresses no other machine reaches. */
function isLoopback(host: string): boolean {
  return /^127\.\d+\.\d+\.\d+$/.test(host) || host === '::1' || host === 'localhost'
}

/**
 * `control` and the environment -> where and how the API listens. A TCP address other than
 * loopback needs a token (control.token or $GATEHOUSE_CONTROL_TOKEN): anyone who reaches it
 * could otherwise run any command as the server's user (a CGI root, a Python app).
 */
export function controlSettings(
  config: ControlConfig,
  env: NodeJS.ProcessEnv = process.env,
): ControlSettings {
  const spec = parseListenAddress(config.listen)
  const fromEnv = env[TOKEN_ENV]
  const token = config.token ?? (fromEnv ? fromEnv : undefined)
  if (spec.kind === 'tcp' && !isLoopback(spec.host) && token === undefined) {
    const problem = `control.listen: ${spec.text} is not a loopback address: give control.token (or ${TOKEN_ENV}), or listen on unix:/path or 127.0.0.1`
    throw new GatehouseError('GH_ERR_CONFIG', problem, { problems: [problem] })
  }
  if (token !== undefined && token.length < 16) {
    const problem = `${TOKEN_ENV}: a token has at least 16 characters`
    throw new GatehouseError('GH_ERR_CONFIG', problem, { problems: [problem] })
  }
  return { spec, token, mode: config.mode }
}

const digest = (text: string) => createHash('sha256').update(text).digest()

function sendJson(res: ServerResponse, status: number, value: unknown, headers: Record<string, string> = {}) {
  const body = `${JSON.stringify(value, null, 2)}\n`
  res.writeHead(status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(body),
    'cache-control': 'no-store',
    ...headers,
  })
  res.end(res.req.method === 'HEAD' ? undefined : body)
}

/** An error as the API answers it: `{ error, code, problems? }` with the code's status. */
function sendError(res: ServerResponse, err: unknown, log: Logger): void {
  if (isGatehouseError(err)) {
    const status = err.code === 'GH_ERR_CONFIG' ? 400 : (err.status ?? 500)
    sendJson(res, status, {
      error: err.message,
      code: err.code,
      ...(err.problems.length > 0 ? { problems: err.problems } : {}),
    })
    return
  }
  log.error({ err }, 'control API request failed')
  sendJson(res, 500, { error: ERROR_CODES.GH_ERR_INTERNAL.message, code: 'GH_ERR_INTERNAL' })
}

async function readJson(req: IncomingMessage): Promise<Json> {
  const chunks: Buffer[] = []
  let length = 0
  for await (const chunk of req as AsyncIterable<Buffer>) {
    length += chunk.length
    if (length > MAX_BODY_BYTES) throw new GatehouseError('GH_ERR_BODY_TOO_LARGE', 'a control API body')
    chunks.push(chunk)
  }
  const text = Buffer.concat(chunks).toString('utf8')
  try {
    return JSON.parse(text) as Json
  } catch (err) {
    throw new GatehouseError(
      'GH_ERR_CONTROL_REQUEST',
      text.trim() === ''
        ? 'the body is empty: send the JSON value'
        : `the body is not JSON: ${(err as Error).message}`,
    )
  }
}

/** A route's match as the status shows it: `host/path`, `=exact`, `~regex`. */
function routeMatch(route: Record<string, unknown>): string {
  const host = route.host === undefined ? '' : [route.host].flat().join(',')
  if (route.exact !== undefined) return `${host}=${String(route.exact)}`
  if (route.regex !== undefined) return `${host}~${String(route.regex)}`
  return `${host}${String(route.path ?? '/')}`
}

export class ControlServer {
  private readonly server: Server
  private readonly tokenDigest: Buffer | undefined
  private readonly started = Date.now()

  constructor(
    private readonly gatehouse: Gatehouse,
    private readonly store: ConfigStore,
    private readonly settings: ControlSettings,
    private readonly log: Logger,
  ) {
    this.tokenDigest = settings.token === undefined ? undefined : digest(settings.token)
    this.server = createServer((req, res) => {
      this.route(req, res).catch((err: unknown) => sendError(res, err, this.log))
    })
    addPoolMetrics(gatehouse.metrics.registry)
  }

  async listen(): Promise<BoundAddress> {
    const { spec, mode } = this.settings
    let bound: BoundAddress
    if (spec.kind === 'unix') {
      // bind(2) creates the socket file with the umask's mode: the umask is narrowed around
      // the listen() call alone (node binds a path before listen() returns), not across
      // bindServer's awaits, where workers being spawned would inherit it. No other user can
      // connect in the moment before the chmod below sets the mode exactly.
      const listen = this.server.listen.bind(this.server)
      this.server.listen = ((...args: Parameters<Server['listen']>) => {
        const umask = process.umask(0o777 & ~mode)
        try {
          return listen(...args)
        } finally {
          process.umask(umask)
        }
      }) as Server['listen']
      bound = await bindServer(this.server, spec, 'control')
      chmodSync(spec.path, mode)
    } else bound = await bindServer(this.server, spec, 'control')
    this.log.info({ control: bound.address }, 'control API listening')
    return bound
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      this.server.close(() => resolve())
      this.server.closeAllConnections()
    })
  }

  private authorized(req: IncomingMessage): boolean {
    if (this.tokenDigest === undefined) return true
    const m = /^Bearer\s+(\S+)\s*$/i.exec(req.headers.authorization ?? '')
    // Digests compared in constant time: equal lengths, and no early exit on a wrong byte.
    return m !== null && timingSafeEqual(digest(m[1]!), this.tokenDigest)
  }

  private async route(req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (!this.authorized(req)) {
      req.resume()
      sendJson(
        res,
        401,
        { error: ERROR_CODES.GH_ERR_CONTROL_AUTH.message, code: 'GH_ERR_CONTROL_AUTH' },
        { 'www-authenticate': 'Bearer realm="gatehouse"' },
      )
      return
    }
    const url = new URL(req.url ?? '/', 'http://control')
    const method = req.method ?? 'GET'
    const path = configPath(url.pathname)
    if (path !== null) return this.config(req, res, method, path)
    if (url.pathname === '/status') {
      if (!this.allow(res, method, ['GET', 'HEAD'])) return
      sendJson(res, 200, await this.status())
      return
    }
    if (url.pathname === '/metrics') {
      if (!this.allow(res, method, ['GET', 'HEAD'])) return
      const { contentType, body } = await this.gatehouse.metrics.render()
      res.writeHead(200, {
        'content-type': contentType,
        'content-length': Buffer.byteLength(body),
        'cache-control': 'no-store',
      })
      res.end(method === 'HEAD' ? undefined : body)
      return
    }
    const restart = /^\/control\/fronts\/(\d+)\/restart$/.exec(url.pathname)
    if (restart) {
      if (!this.allow(res, method, ['POST'])) return
      req.resume()
      const index = Number(restart[1])
      if (index === 0 || !this.gatehouse.fronts?.restart(index))
        sendJson(res, 404, {
          error: `${ERROR_CODES.GH_ERR_NOT_FOUND.message}: no front thread ${index} (front 0, the main thread, is not restarted)`,
        })
      else sendJson(res, 202, { success: 'front thread restarting', front: index })
      return
    }
    const reload = /^\/control\/pools\/([^/]+)\/reload$/.exec(url.pathname)
    if (reload) {
      if (!this.allow(res, method, ['POST'])) return
      req.resume()
      await this.reloadPool(res, decodeURIComponent(reload[1]!))
      return
    }
    req.resume()
    sendJson(res, 404, {
      error: `${ERROR_CODES.GH_ERR_NOT_FOUND.message}: ${url.pathname} (try /config, /status, /metrics, /control/pools/N/reload)`,
      code: 'GH_ERR_NOT_FOUND',
    })
  }

  private allow(res: ServerResponse, method: string, methods: string[]): boolean {
    if (methods.includes(method)) return true
    res.req.resume()
    sendJson(
      res,
      405,
      { error: ERROR_CODES.GH_ERR_METHOD_NOT_ALLOWED.message, code: 'GH_ERR_METHOD_NOT_ALLOWED' },
      { allow: methods.join(', ') },
    )
    return false
  }

  private async config(
    req: IncomingMessage,
    res: ServerResponse,
    method: string,
    path: string[],
  ): Promise<void> {
    const shown = `/config${path.map((s) => `/${encodeURIComponent(s)}`).join('')}`
    switch (method) {
      case 'GET':
      case 'HEAD':
        req.resume()
        sendJson(res, 200, getAt(this.store.input, path))
        return
      case 'PUT': {
        const value = await readJson(req)
        await this.store.apply((current) => putAt(current, path, value), `PUT ${shown}`)
        this.applied(res, method, shown)
        return
      }
      case 'POST': {
        const value = await readJson(req)
        let index = -1
        await this.store.apply((current) => {
          const out = appendAt(current, path, value)
          index = out.index
          return out.root
        }, `POST ${shown}`)
        this.applied(res, method, `${shown}/${index}`)
        return
      }
      case 'DELETE':
        req.resume()
        await this.store.apply((current) => deleteAt(current, path), `DELETE ${shown}`)
        this.applied(res, method, shown)
        return
      default:
        this.allow(res, method, ['GET', 'HEAD', 'PUT', 'POST', 'DELETE'])
    }
  }

  private applied(res: ServerResponse, method: string, path: string): void {
    this.log.info({ method, path }, 'control API: configuration applied')
    sendJson(res, 200, { success: 'configuration applied', path })
  }

  /** `N`: the index of the route in /config/routes whose pool rolls its workers. */
  private async reloadPool(res: ServerResponse, name: string): Promise<void> {
    const routes = this.gatehouse.config.routes
    const index = /^(0|[1-9]\d*)$/.test(name) ? Number(name) : -1
    if (index < 0 || index >= routes.length)
      throw new GatehouseError(
        'GH_ERR_CONTROL_PATH',
        `no route ${JSON.stringify(name)}: a pool is named by its route's index in /config/routes (0 to ${routes.length - 1})`,
      )
    if (!this.gatehouse.routeManagesWorkers(index))
      throw new GatehouseError(
        'GH_ERR_CONTROL_REQUEST',
        `route ${index} manages no worker pool (wsgi, asgi and php with a managed pool do)`,
      )
    this.log.info({ route: index }, 'control API: reloading the workers of one route')
    await this.gatehouse.reloadRouteWorkers(index)
    sendJson(res, 200, { success: 'workers reloaded', route: index })
  }

  /** Every pool, listener, route and upstream, and the front's counters. */
  private async status(): Promise<unknown> {
    const g = this.gatehouse
    const front = await g.frontStatus()
    const metrics = await g.metrics.json()
    const value = (name: string) =>
      metrics.find((m) => m.name === name)?.values.reduce((sum, v) => sum + v.value, 0) ?? 0
    const byStatus: Record<string, number> = {}
    for (const v of metrics.find((m) => m.name === 'gatehouse_http_requests_total')?.values ?? []) {
      const cls = String(v.labels.status)
      byStatus[cls] = (byStatus[cls] ?? 0) + v.value
    }
    const { inbound, ...counters } = front
    // front_processes > 1: each front thread's share (this thread is front 0).
    const fronts =
      g.fronts && [await g.frontFigures(0), ...(await g.fronts.figures())].map(({ metrics: _, ...f }) => f)
    return {
      ...(fronts ? { fronts } : {}),
      server: { pid: process.pid, uptime_seconds: Math.floor((Date.now() - this.started) / 1000) },
      front: {
        ...counters,
        requests_total: value('gatehouse_http_requests_total'),
        requests_by_status: byStatus,
        received_bytes_total: value('gatehouse_http_received_bytes_total'),
        sent_bytes_total: value('gatehouse_http_sent_bytes_total'),
      },
      listeners: [
        ...g.addresses().map((a) => ({ kind: 'http', address: a.address })),
        ...Object.entries(inbound).flatMap(([kind, list]) => list.map((l) => ({ kind, ...l }))),
      ],
      routes: g.config.routes.map((route, index) => {
        const r = route as unknown as Record<string, unknown>
        const action = Object.keys(r).find(
          (k) => !['host', 'path', 'exact', 'regex', 'methods', 'max_body_bytes'].includes(k),
        )
        // The upstream as given (`pass` of fastcgi and uwsgi, php's `fastcgi` server).
        const given = (this.store.input as { routes?: Record<string, Json>[] }).routes?.[index]
        const table = action ? given?.[action] : undefined
        const upstream =
          table && typeof table === 'object' && !Array.isArray(table)
            ? (table.pass ?? table.fastcgi ?? table.upstream)
            : undefined
        return {
          index,
          match: routeMatch(r),
          action,
          pool: g.routeManagesWorkers(index),
          ...(typeof upstream === 'string' ? { upstream } : {}),
        }
      }),
      pools: (JSON.parse(allPoolsJson()) as { pools: unknown[] }).pools,
      upstreams: upstreamStats(),
      // Automatic certificates, when some listener names ACME hosts.
      ...(g.acmeStatus().length > 0 ? { acme: g.acmeStatus() } : {}),
    }
  }
}

/**
 * The control API of a Gatehouse made with createGatehouse (`gatehouse serve` does this
 * itself): it listens where the config's `control` says, and its changes apply to
 * `gatehouse`. `input` is the configuration as given (what GET /config shows); the state
 * file (`control.state`, or `options.stateFile`) is written after each change, and reading
 * it at start is the caller's choice. Close it before or with the server.
 */
export async function startControl(
  gatehouse: Gatehouse,
  input: GatehouseConfigInput,
  options: { baseDir?: string; stateFile?: string } = {},
): Promise<{ address: string; close(): Promise<void> }> {
  const config = gatehouse.config.control
  if (!config) {
    const problem = 'control: not set (give `control = "unix:/path"` to serve the control API)'
    throw new GatehouseError('GH_ERR_CONFIG', problem, { problems: [problem] })
  }
  const log = gatehouse.logs.error
  const store = new ConfigStore(
    gatehouse,
    input as Json,
    options.baseDir ?? process.cwd(),
    options.stateFile ?? config.state,
    fingerprint(input),
    log,
  )
  const server = new ControlServer(gatehouse, store, controlSettings(config), log)
  const bound = await server.listen()
  return { address: bound.address, close: () => server.close() }
}
