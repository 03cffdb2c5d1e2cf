/*
 * Where a proxied request goes: the upstream's address (an http:// or https:// URL, or a
 * Unix socket), and the path it is sent with. Pure.
 *
 * Path mapping follows nginx's proxy_pass: an upstream URL without a path part passes the
 * request's path unchanged; one with a path part (even a lone `/`) replaces the route's
 * prefix with it (`path = "/app/"` + `upstream = "http://b/base/"`: /app/x -> /base/x).
 * `strip_prefix` overrides the choice (true: Caddy's handle_path, the prefix removed).
 */
import { isAbsolute, resolve } from 'node:path'

export interface UpstreamUrl {
  /** `http://host:port` (for undici, and the access log's upstream address). */
  origin: string
  /** A Unix socket, when the upstream is `unix:/path`. */
  socketPath?: string
  /** The URL's path part, `''` when it has none. */
  basePath: string
  /** The upstream's `host[:port]`, the Host header with `host = "$proxy_host"`. */
  authority: string
  /** For logs and the status page: the URL, or `unix:/path`. */
  label: string
}

/** `http://h:p[/base]`, `https://...`, or `unix:/path` (relative to baseDir). Throws an Error saying what is wrong. */
export function parseUpstreamUrl(value: string, baseDir: string): UpstreamUrl {
  if (value.startsWith('unix:')) {
    const raw = value.slice(5)
    if (raw === '') throw new Error('unix: needs a socket path')
    const socketPath = isAbsolute(raw) ? raw : resolve(baseDir, raw)
    return {
      origin: 'http://localhost',
      socketPath,
      basePath: '',
      authority: 'localhost',
      label: `unix:${socketPath}`,
    }
  }
  const m = /^(https?):\/\/([^/?#]*)(\/[^?#]*)?$/i.exec(value)
  if (!m)
    throw new Error(
      `not an http:// or https:// URL without query or fragment, or unix:/path: ${JSON.stringify(value)}`,
    )
  let url: URL
  try {
    url = new URL(value)
  } catch {
    throw new Error(`not a valid URL: ${JSON.stringify(value)}`)
  }
  if (url.username || url.password) throw new Error('an upstream URL carries no user or password')
  return {
    origin: url.origin,
    basePath: m[3] ?? '',
    authority: url.host,
    label: `${url.origin}${m[3] ?? ''}`,
  }
}

export interface PathInput {
  /** The request-target's path as received (percent-encoded). */
  rawPath: string
  /** The decoded, normalised path the router matched. */
  path: string
  query: string
  /** The route's prefix without a trailing slash ('' for `/` and regex routes). */
  prefix: string
}

/** The request-target sent upstream (origin-form, with the query). */
export function upstreamPath(input: PathInput, basePath: string, strip: boolean): string {
  let rest = input.rawPath
  const { prefix } = input
  if (strip && prefix !== '') {
    const atBoundary = (p: string) =>
      p.startsWith(prefix) && (p.length === prefix.length || p.charCodeAt(prefix.length) === 47)
    if (atBoundary(rest)) rest = rest.slice(prefix.length)
    // The raw path spells the prefix differently (%61pp for app): the decoded one is re-encoded.
    else if (atBoundary(input.path)) rest = encodeURI(input.path.slice(prefix.length))
  }
  let path: string
  if (basePath === '') path = rest === '' ? '/' : rest
  else if (rest === '') path = basePath
  else if (basePath.endsWith('/') && rest.startsWith('/')) path = basePath + rest.slice(1)
  else if (!basePath.endsWith('/') && !rest.startsWith('/')) path = `${basePath}/${rest}`
  else path = basePath + rest
  return input.query === '' ? path : `${path}?${input.query}`
}
