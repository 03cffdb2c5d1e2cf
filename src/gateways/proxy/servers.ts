/*
 * The upstream servers of one proxy route and the connections kept to them: one undici Pool
 * per server (kept-alive HTTP/1.1 connections, one request at a time on each). A route
 * names one server (a URL), or an upstream group (core/upstream: a list in place or an
 * `[upstreams.NAME]` table), whose servers are `host:port` or `unix:/path` (spoken to in
 * plain HTTP) or http:// URLs.
 */
import { Pool } from 'undici'
import { parseUpstreamUrl, type UpstreamUrl } from './target.js'

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

/** A group server's address (`host:port`, `unix:/path`, or a URL) as an upstream URL. */
export function groupServerUrl(address: string, baseDir: string): UpstreamUrl {
  if (/^https?:\/\//i.test(address) || address.startsWith('unix:')) return parseUpstreamUrl(address, baseDir)
  return parseUpstreamUrl(`http://${address}`, baseDir)
}
