import { lstatSync, unlinkSync } from 'node:fs'
import { connect, type Server } from 'node:net'
import { GatehouseError } from './errors.js'
import type { ListenAddress } from './address.js'

export interface BoundAddress {
  address: string
  /** For TCP listeners: the bound port (useful with port 0). */
  port?: number
  /** For Unix listeners: the socket path. */
  path?: string
  /** An HTTPS listener. */
  tls?: boolean
}

/**
 * Bind any listener (HTTP, uwsgi, FastCGI) to a parsed address. A busy address fails with
 * GH_ERR_LISTEN naming it (and `label`, e.g. "uwsgi"); a stale Unix socket file is removed.
 */
export async function bindServer(
  server: Server,
  spec: ListenAddress,
  label?: string,
  backlog?: number,
): Promise<BoundAddress> {
  if (spec.kind === 'unix') await removeStaleSocket(spec.path)
  await new Promise<void>((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException) => {
      const reason =
        err.code === 'EADDRINUSE'
          ? 'address already in use'
          : err.code === 'EACCES'
            ? 'permission denied'
            : err.code === 'EADDRNOTAVAIL'
              ? 'address not available on this machine'
              : err.message
      const where = label ? `${spec.text} (${label})` : spec.text
      reject(new GatehouseError('GH_ERR_LISTEN', `${where}: ${reason}`, { cause: err }))
    }
    server.once('error', onError)
    const done = () => {
      server.off('error', onError)
      resolve()
    }
    if (spec.kind === 'unix') server.listen({ path: spec.path, backlog }, done)
    else if (spec.kind === 'fd') server.listen({ fd: spec.fd, backlog }, done)
    else server.listen({ host: spec.host, port: spec.port, backlog }, done)
  })
  const addr = server.address()
  if (spec.kind === 'unix' || typeof addr === 'string' || addr === null)
    return { address: spec.text, path: spec.kind === 'unix' ? spec.path : String(addr) }
  // An inherited socket is named by what it listens on, as the log and the status page show.
  return {
    address: addr.family === 'IPv6' ? `[${addr.address}]:${addr.port}` : `${addr.address}:${addr.port}`,
    port: addr.port,
  }
}

/** A Unix socket file left by a dead process is removed; one with a live server is an error. */
async function removeStaleSocket(path: string): Promise<void> {
  let isSocket = false
  try {
    isSocket = lstatSync(path).isSocket()
  } catch {
    return
  }
  if (!isSocket) return // listen() reports EADDRINUSE with the path
  const live = await new Promise<boolean>((resolve) => {
    const probe = connect(path)
    probe.once('connect', () => {
      probe.destroy()
      resolve(true)
    })
    probe.once('error', () => resolve(false))
  })
  if (!live) unlinkSync(path)
}

/**
 * A listener's address as a URL a person can click: `http://127.0.0.1:8000` (`https://` for a
 * TLS listener); the wildcard
 * addresses (0.0.0.0, [::]) as the loopback address of their family, which reaches them from
 * this machine; a Unix socket as `unix:/path`.
 */
export function listenUrl(bound: BoundAddress): string {
  if (bound.path !== undefined || bound.address.startsWith('unix:')) return bound.address
  const m = /^(.*):(\d+)$/.exec(bound.address)
  if (!m) return bound.address
  const host = m[1] === '0.0.0.0' ? '127.0.0.1' : m[1] === '[::]' ? '[::1]' : m[1]!
  return `${bound.tls ? 'https' : 'http'}://${host}:${m[2]}`
}
