import { isIP } from 'node:net'
import { isAbsolute, resolve as resolvePath } from 'node:path'

export type ListenAddress =
  | { kind: 'tcp'; host: string; port: number; text: string }
  | { kind: 'unix'; path: string; text: string }
  | { kind: 'fd'; fd: number; text: string }

/**
 * `host:port`, `[v6]:port`, `unix:/path`, or a bare `port` (loopback, like uvicorn's default).
 * Port 0 asks the OS for a free port. `fd://N` (gunicorn's spelling; uvicorn's --fd) is a
 * socket already listening on file descriptor N, inherited from whoever started the server
 * (systemd's socket activation: see socket-activation.ts).
 */
export function parseListenAddress(value: string): ListenAddress {
  const text = value.trim()
  const fd = /^fd:\/\/(\d+)$/.exec(text)
  if (fd) {
    const n = Number(fd[1])
    if (n < 3 || n > 65535) throw new Error(`fd://N needs a descriptor from 3 up (0-2 are stdio): ${value}`)
    return { kind: 'fd', fd: n, text }
  }
  if (text.startsWith('unix:')) {
    const path = text.slice(5)
    if (!path.startsWith('/') && !path.startsWith('.'))
      throw new Error(`unix socket path must be absolute or start with ".": ${value}`)
    return { kind: 'unix', path, text }
  }
  const scheme = /^([A-Za-z][A-Za-z0-9+.-]*):\/\/(.*)$/.exec(text)
  if (scheme) {
    const rest = scheme[2]!.replace(/\/.*$/, '')
    throw new Error(
      `a scheme is not part of an address: write ${JSON.stringify(rest || 'host:port')}, not ${JSON.stringify(value)} (${scheme[1]}:// is not needed)`,
    )
  }
  let host: string
  let portText: string
  const v6 = /^\[([^\]]+)\]:(\d+)$/.exec(text)
  if (v6) {
    host = v6[1]!
    portText = v6[2]!
    if (isIP(host) !== 6) throw new Error(`not an IPv6 address: ${host}`)
  } else if (/^\d+$/.test(text)) {
    host = '127.0.0.1'
    portText = text
  } else {
    const i = text.lastIndexOf(':')
    if (i <= 0)
      throw new Error(`expected host:port, [v6]:port, port or unix:/path, got ${JSON.stringify(value)}`)
    host = text.slice(0, i)
    portText = text.slice(i + 1)
    if (host.includes(':')) throw new Error(`IPv6 addresses need brackets: [${host}]:${portText}`)
    if (!/^\d+$/.test(portText)) throw new Error(`not a port number: ${JSON.stringify(portText)}`)
  }
  const port = Number(portText)
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`port out of range: ${portText}`)
  return { kind: 'tcp', host, port, text: host.includes(':') ? `[${host}]:${port}` : `${host}:${port}` }
}

/** Where an upstream (a uwsgi or FastCGI server) listens: `unix:/path`, `host:port`, `[v6]:port`, or the parsed form. */
export type UpstreamAddress = string | { path: string } | { host: string; port: number }

export type ResolvedUpstream = { path: string; text: string } | { host: string; port: number; text: string }

/** Parse an upstream address; a relative `unix:./x.sock` resolves against `baseDir`. */
export function resolveUpstreamAddress(address: UpstreamAddress, baseDir = process.cwd()): ResolvedUpstream {
  if (typeof address !== 'string') {
    return 'path' in address
      ? { path: address.path, text: `unix:${address.path}` }
      : { host: address.host, port: address.port, text: `${address.host}:${address.port}` }
  }
  const spec = parseListenAddress(address)
  if (spec.kind === 'fd')
    throw new Error(`an upstream is connected to, not inherited: ${JSON.stringify(address)}`)
  if (spec.kind === 'unix') {
    const path = isAbsolute(spec.path) ? spec.path : resolvePath(baseDir, spec.path)
    return { path, text: `unix:${path}` }
  }
  if (spec.port === 0) throw new Error(`an upstream needs a port: ${JSON.stringify(address)}`)
  return { host: spec.host, port: spec.port, text: spec.text }
}
