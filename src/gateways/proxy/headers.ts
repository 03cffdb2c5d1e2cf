/*
 * The header rules of the proxy, both ways. Pure.
 *
 * Hop-by-hop fields (RFC 9110 7.6.1: Connection and the fields it lists, Keep-Alive, TE,
 * Trailer, Transfer-Encoding, Upgrade, and Proxy-*) describe one connection and are dropped
 * in both directions; each connection gets its own framing. Expect is dropped too: the front
 * answers 100-continue itself.
 *
 * X-Forwarded-For/-Proto/-Host and Forwarded (RFC 7239) say who the client was. From a
 * client that is not a trusted proxy they are replaced (anyone can send them); from a
 * trusted proxy ours are appended to theirs, so the upstream sees the whole chain.
 */
import { isIP } from 'node:net'
import { HOP_BY_HOP } from '../../core/http-headers.js'

/** The names Connection lists in `raw` (flat name, value pairs), lower case; null when none. */
function connectionListed(raw: readonly string[]): Set<string> | null {
  let listed: Set<string> | null = null
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!
    if (name.length !== 10 || name.toLowerCase() !== 'connection') continue
    for (const token of raw[i + 1]!.split(',')) {
      const t = token.trim().toLowerCase()
      if (t !== '') (listed ??= new Set()).add(t)
    }
  }
  return listed
}

function isHopByHop(lower: string, listed: Set<string> | null): boolean {
  return HOP_BY_HOP.has(lower) || lower.startsWith('proxy-') || (listed !== null && listed.has(lower))
}

const FORWARDED = new Set(['x-forwarded-for', 'x-forwarded-proto', 'x-forwarded-host', 'forwarded'])

export interface RequestHeaderInput {
  /** The client's fields as received (req.rawHeaders). */
  raw: readonly string[]
  remoteAddress: string
  scheme: 'http' | 'https'
  /** The peer is a trusted proxy: its forwarding fields are kept and appended to. */
  trusted: boolean
  /** The Host to send; undefined: the client's own (none: undici sends the upstream's). */
  host: string | undefined
  /** set_headers, lower-cased name -> [name, value]; '' removes the field. */
  set: ReadonlyMap<string, readonly [string, string]>
  /** remove_headers, lower case. */
  remove: ReadonlySet<string>
  /** A Content-Length to send instead of the client's (a spooled body); null: none. */
  contentLength?: number | null
}

/** RFC 7239 4: a node or host value that is not a token goes in quotes ([v6], host:port). */
function forwardedValue(value: string): string {
  return /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(value) ? value : `"${value.replace(/["\\]/g, '\\$&')}"`
}

function forwardedFor(address: string): string {
  if (address === '') return 'unknown'
  return isIP(address) === 6 ? `"[${address}]"` : address
}

/** The fields sent upstream, flat name/value pairs (undici's array form). */
export function requestHeaders(input: RequestHeaderInput): string[] {
  const { raw, set, remove, trusted } = input
  const listed = connectionListed(raw)
  const out: string[] = []
  let clientHost: string | undefined
  let xff: string | undefined
  let xfProto: string | undefined
  let xfHost: string | undefined
  let forwarded: string | undefined
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!
    const value = raw[i + 1]!
    const lower = name.toLowerCase()
    if (lower === 'host') {
      clientHost ??= value
      continue
    }
    if (isHopByHop(lower, listed) || lower === 'expect') continue
    if (FORWARDED.has(lower)) {
      if (!trusted) continue
      if (lower === 'x-forwarded-for') xff = xff === undefined ? value : `${xff}, ${value}`
      else if (lower === 'forwarded') forwarded = forwarded === undefined ? value : `${forwarded}, ${value}`
      else if (lower === 'x-forwarded-proto') xfProto ??= value
      else xfHost ??= value
      continue
    }
    if (lower === 'content-length' && input.contentLength !== undefined) continue
    if (remove.has(lower) || set.has(lower)) continue
    out.push(name, value)
  }
  const host = input.host ?? clientHost
  if (host !== undefined) out.push('host', host)
  if (input.contentLength != null) out.push('content-length', String(input.contentLength))
  const remote = input.remoteAddress
  out.push('x-forwarded-for', xff === undefined ? remote : `${xff}, ${remote}`)
  out.push('x-forwarded-proto', xfProto ?? input.scheme)
  const originalHost = xfHost ?? clientHost
  if (originalHost !== undefined) out.push('x-forwarded-host', originalHost)
  let element = `for=${forwardedFor(remote)}`
  if (clientHost !== undefined) element += `;host=${forwardedValue(clientHost)}`
  element += `;proto=${input.scheme}`
  out.push('forwarded', forwarded === undefined ? element : `${forwarded}, ${element}`)
  for (const [name, value] of set.values()) if (value !== '') out.push(name, value)
  return out
}

/**
 * The upstream's response fields for our client, as name/value string pairs: hop-by-hop
 * ones dropped. With `upgrade` (a 101), Upgrade is kept and Connection says upgrade.
 */
export function responseHeaders(raw: readonly string[], upgrade = false): string[] {
  const listed = connectionListed(raw)
  const out: string[] = []
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!
    const lower = name.toLowerCase()
    if (upgrade && lower === 'upgrade') {
      out.push(name, raw[i + 1]!)
      continue
    }
    if (isHopByHop(lower, listed)) continue
    out.push(name, raw[i + 1]!)
  }
  if (upgrade) out.push('Connection', 'Upgrade')
  return out
}

/** undici's raw headers (Buffers, latin1 on the wire) as strings. */
export function latin1Headers(raw: readonly (Buffer | string)[]): string[] {
  const out = new Array<string>(raw.length)
  for (let i = 0; i < raw.length; i++) {
    const v = raw[i]!
    out[i] = typeof v === 'string' ? v : v.toString('latin1')
  }
  return out
}
