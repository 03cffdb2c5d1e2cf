/**
 * Request-target handling (RFC 9112 3.2) and path normalization. Routing and file lookup
 * use the decoded path with dot-segments removed (RFC 3986 5.2.4), the way nginx does:
 * `/a/%2e%2e/b` is `/b`, and a path that climbs above `/` is refused rather than clamped.
 */

export interface ParsedTarget {
  rawPath: string
  query: string
  path: string
  /** Host from an absolute-form target (`GET http://host/ HTTP/1.1`), which overrides Host. */
  authority?: string
}

export class BadTargetError extends Error {}

/** Characters allowed in a path as received: RFC 3986 pchar, '/', and '%' escapes. */
const RAW_PATH_OK = /^[A-Za-z0-9\-._~!$&'()*+,;=:@/%]*$/

export function parseTarget(url: string): ParsedTarget {
  let target = url
  let authority: string | undefined
  if (!target.startsWith('/')) {
    const m = /^https?:\/\/([^/?#]+)([^#]*)$/i.exec(target)
    if (!m) throw new BadTargetError('request-target must be an absolute path or an absolute URI')
    authority = m[1]
    target = m[2] || '/'
    if (!target.startsWith('/')) target = `/${target}`
  }
  const q = target.indexOf('?')
  const rawPath = q === -1 ? target : target.slice(0, q)
  const query = q === -1 ? '' : target.slice(q + 1)
  if (!RAW_PATH_OK.test(rawPath)) throw new BadTargetError('invalid character in request path')
  const out: ParsedTarget = { rawPath, query, path: normalizePath(rawPath) }
  if (authority !== undefined) out.authority = authority
  return out
}

/** Decode %XX (as UTF-8), refuse NUL, merge slashes, resolve `.` and `..`; throw when it leaves `/`. */
export function normalizePath(rawPath: string): string {
  if (!rawPath.startsWith('/')) throw new BadTargetError('request path must start with "/"')
  if (rawPath.includes('\0')) throw new BadTargetError('NUL byte in request path')
  const needsWork = rawPath.includes('%') || rawPath.includes('/.') || rawPath.includes('//')
  if (!needsWork) return rawPath
  let decoded: string
  try {
    decoded = rawPath.includes('%') ? decodeURIComponent(rawPath) : rawPath
  } catch {
    throw new BadTargetError('malformed percent-encoding in request path')
  }
  if (decoded.includes('\0')) throw new BadTargetError('NUL byte in request path')
  const segments: string[] = []
  const parts = decoded.split('/')
  for (let i = 1; i < parts.length; i++) {
    const seg = parts[i]!
    if (seg === '' || seg === '.') continue
    if (seg === '..') {
      if (segments.length === 0) throw new BadTargetError('request path leaves the root')
      segments.pop()
      continue
    }
    segments.push(seg)
  }
  const last = parts[parts.length - 1]
  const trailing = segments.length > 0 && (last === '' || last === '.' || last === '..')
  return `/${segments.join('/')}${trailing ? '/' : ''}`
}

/**
 * Host values seen lately and what they parse to: a server answers few names, and every
 * request carries one. Bounded: past HOST_CACHE_ENTRIES values it starts over.
 */
const hostCache = new Map<string, readonly [string, number | undefined] | null>()
const HOST_CACHE_ENTRIES = 256

/** Host header -> [lower-case name, port or undefined]; null when malformed. */
export function parseHost(value: string): readonly [string, number | undefined] | null {
  // Long values (no real host name is) are not kept: the cache stays small.
  if (value.length > 255) return parseHostUncached(value)
  const cached = hostCache.get(value)
  if (cached !== undefined) return cached
  const parsed = parseHostUncached(value)
  const kept = parsed === null ? null : Object.freeze(parsed)
  if (hostCache.size >= HOST_CACHE_ENTRIES) hostCache.clear()
  hostCache.set(value, kept)
  return kept
}

function parseHostUncached(value: string): [string, number | undefined] | null {
  const m = /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9\-._~!$&'()*+,;=%]*)(?::(\d{1,5}))?$/.exec(value.trim())
  if (!m) return null
  const port = m[2] === undefined ? undefined : Number(m[2])
  if (port !== undefined && port > 65535) return null
  let host = m[1]!.toLowerCase()
  if (host.endsWith('.')) host = host.slice(0, -1)
  return [host, port]
}
