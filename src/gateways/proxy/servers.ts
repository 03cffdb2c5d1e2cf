/*
 * The upstream servers of one proxy route and the connections kept to them: one undici Pool
 * per server (kept-alive HTTP/1.1 connections, one request at a time on each). pick() is
 * the one place a server is chosen for a request: one server today; an upstream group
 * (balancing, health) plugs in here.
 */
import { Pool } from 'undici'
import type { UpstreamUrl } from './target.js'

export interface ServerTimeouts {
  connectMs: number
  firstByteMs: number
  idleMs: number
  keepAliveMs: number
}

export interface UpstreamServer {
  url: UpstreamUrl
  pool: Pool
}

export function createServer(url: UpstreamUrl, t: ServerTimeouts): UpstreamServer {
  const pool = new Pool(url.origin, {
    ...(url.socketPath !== undefined ? { socketPath: url.socketPath } : {}),
    connect: { timeout: t.connectMs },
    headersTimeout: t.firstByteMs,
    bodyTimeout: t.idleMs,
    keepAliveTimeout: t.keepAliveMs,
    // The upstream's own Keep-Alive: timeout=N is believed up to this.
    keepAliveMaxTimeout: Math.max(t.keepAliveMs, 600_000),
    pipelining: 1,
  })
  return { url, pool }
}

export class UpstreamSet {
  constructor(private readonly servers: readonly UpstreamServer[]) {}

  /** The server for this try (`tried`: those already tried for this request). */
  pick(tried: readonly UpstreamServer[] = []): UpstreamServer | undefined {
    const fresh = this.servers.find((s) => !tried.includes(s))
    return fresh ?? this.servers[0]
  }

  async close(): Promise<void> {
    await Promise.all(this.servers.map((s) => s.pool.close().catch(() => undefined)))
  }
}
