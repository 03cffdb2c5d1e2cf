/*
 * The `fastcgi` and `php` actions over an upstream group (src/core/upstream/): one pool of
 * kept-alive connections per server, the group picking the server of each request,
 * retrying an idempotent request whose body can be sent again on another server, and
 * probing each server when the group has `health` (docs/fastcgi.md, Upstream groups).
 */
import { connect } from 'node:net'
import { join } from 'node:path'
import type { Logger } from 'pino'
import { GatehouseError } from '../../core/errors.js'
import { resolveUpstreamAddress } from '../../core/address.js'
import {
  type HealthCheckSpec,
  type HealthProbe,
  releaseGroup,
  takeGroup,
  type UpstreamGroup,
  type UpstreamGroupSpec,
  type UpstreamLease,
  tryUpstreams,
} from '../../core/upstream/index.js'
import { encodeNameValuePairs, encodeRecord, RecordType } from './codec.js'
import type { FastCGIRequest, FastCGIResponse } from './exchange.js'
import { FastCGIPool, type FastCGIPoolOptions } from './pool.js'

/** What a health probe with a `path` sends besides the path (the action's params, its root). */
export interface FastCGIProbeBase {
  /** The action's static params (SCRIPT_FILENAME of a single-script app wins over the path). */
  params: Record<string, string>
  /** A relative SCRIPT_FILENAME is taken from here (php's root, fastcgi's document_root). */
  root: string
}

export class FastCGIGroupUpstream {
  readonly upstream: string
  readonly group: UpstreamGroup
  private readonly pools = new Map<string, FastCGIPool>()

  constructor(
    spec: UpstreamGroupSpec,
    options: FastCGIPoolOptions,
    log: Logger,
    probeBase: FastCGIProbeBase,
  ) {
    this.upstream = `upstream:${spec.name}`
    this.group = takeGroup(spec, spec.health ? fastcgiProbe(spec.health, probeBase, options) : undefined, log)
    for (const s of this.group.servers) this.pools.set(s.address, new FastCGIPool(s.address, options, log))
  }

  /**
   * Send `request` to a server of the group; `body()` makes its body afresh for each try.
   * Resolves with the response and the lease, which the caller releases once the response
   * has been relayed.
   */
  async send(
    request: FastCGIRequest,
    body: () => FastCGIRequest['body'],
    retryable: boolean,
  ): Promise<{ response: FastCGIResponse; lease: UpstreamLease; server: string }> {
    const { result, lease } = await tryUpstreams({
      group: this.group,
      retryable,
      signal: request.signal,
      attempt: (server) => {
        if (request.upstream) (request.upstream.addr ??= []).push(server.address)
        const b = body()
        const req: FastCGIRequest = { ...request }
        if (b !== undefined) req.body = b
        else delete req.body
        return this.pools.get(server.address)!.request(req)
      },
      status: (r) => r.status,
      discard: (r) => {
        if (!r.takeWhole?.()) r.body.destroy()
      },
    })
    return { response: result, lease, server: lease.server.address }
  }

  async close(): Promise<void> {
    releaseGroup(this.group)
    await Promise.all([...this.pools.values()].map((p) => p.close()))
  }
}

/**
 * The active health probe of a FastCGI server. With `path`, a GET of that path (php-fpm's
 * ping.path, or a script) whose status must be in `status` (default 200-399). Without it,
 * FCGI_GET_VALUES on a connection of its own (FastCGI 1.0 section 4.1): the server must
 * answer with GET_VALUES_RESULT, which php-fpm, php-cgi and our own listener do without
 * running any script.
 */
export function fastcgiProbe(
  health: HealthCheckSpec,
  base: FastCGIProbeBase,
  options: FastCGIPoolOptions,
): HealthProbe {
  if (health.path === undefined) return (server, signal) => getValues(server.address, signal)
  const path = health.path
  const params: Record<string, string> = {
    GATEWAY_INTERFACE: 'CGI/1.1',
    SERVER_SOFTWARE: 'gatehouse',
    SERVER_PROTOCOL: 'HTTP/1.1',
    SERVER_NAME: 'localhost',
    SERVER_ADDR: '127.0.0.1',
    SERVER_PORT: '80',
    REMOTE_ADDR: '127.0.0.1',
    REMOTE_PORT: '0',
    REQUEST_METHOD: 'GET',
    QUERY_STRING: '',
    SCRIPT_FILENAME: join(base.root || '/', path),
    DOCUMENT_ROOT: base.root,
    ...base.params,
    SCRIPT_NAME: path,
    REQUEST_URI: path,
    DOCUMENT_URI: path,
    HTTP_USER_AGENT: 'gatehouse-health-check',
  }
  const accepted = health.status
  return async (server, signal) => {
    // A pool of its own, one connection per probe: a probe neither waits behind nor holds
    // one of the kept-alive connections that requests use.
    const pool = new FastCGIPool(server.address, {
      ...options,
      max_connections: 1,
      queue: 0,
      keep_conn: false,
      connect_timeout: health.timeout,
      read_timeout: health.timeout,
    })
    try {
      const res = await pool.request({ params, signal })
      if (!res.takeWhole?.()) res.body.resume()
      const ok = accepted.length > 0 ? accepted.includes(res.status) : res.status >= 200 && res.status < 400
      if (!ok) throw new Error(`health check ${path} answered ${res.status}`)
    } finally {
      void pool.close()
    }
  }
}

function getValues(address: string, signal: AbortSignal): Promise<void> {
  const target = resolveUpstreamAddress(address)
  // php-fpm gives each connection a worker: one held by an idle kept-alive connection of
  // ours would leave the probe waiting in its listen queue, and the server seen down.
  FastCGIPool.dropIdleTo(address)
  return new Promise((resolve, reject) => {
    const socket = 'path' in target ? connect(target.path) : connect({ host: target.host, port: target.port })
    const done = (err?: Error) => {
      signal.removeEventListener('abort', onAbort)
      socket.destroy()
      if (err) reject(err)
      else resolve()
    }
    const onAbort = () => done(signal.reason as Error)
    signal.addEventListener('abort', onAbort, { once: true })
    let head = Buffer.alloc(0)
    socket.on('connect', () => {
      const content = encodeNameValuePairs([['FCGI_MPXS_CONNS', '']])
      socket.write(Buffer.concat(encodeRecord(RecordType.GET_VALUES, 0, content)))
    })
    socket.on('data', (chunk: Buffer) => {
      head = Buffer.concat([head, chunk])
      if (head.length < 8) return
      // The record header: version 1, then the type.
      if (head[0] === 1 && head[1] === RecordType.GET_VALUES_RESULT) done()
      else done(new GatehouseError('GH_ERR_FASTCGI_PROTOCOL', `${address}: no GET_VALUES_RESULT`))
    })
    socket.on('error', (err) => done(err))
    socket.on('end', () => done(new Error(`${address} closed the connection without GET_VALUES_RESULT`)))
  })
}
