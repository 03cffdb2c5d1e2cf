/**
 * Gatehouse's uwsgi listeners (`uwsgi_listen`): opened with the HTTP listeners, diffed on
 * reload, drained on close. Requests go to the same listener as HTTP requests, so
 * `uwsgi_pass` from nginx reaches every route.
 */
import { lstatSync, unlinkSync } from 'node:fs'
import { connect } from 'node:net'
import type { Logger } from 'pino'
import type { GatehouseConfig } from '../config/schema.js'
import { GatehouseError } from '../errors.js'
import { type ListenAddress, parseListenAddress } from './listen-address.js'
import { createUwsgiServer, type RequestListener, type UwsgiServer } from './uwsgi-server.js'

export interface BoundAddress {
  address: string
  port?: number
  path?: string
}

interface Entry {
  spec: ListenAddress
  server: UwsgiServer
  bound: BoundAddress
}

export class UwsgiListeners {
  private readonly entries: Entry[] = []

  constructor(
    private readonly handler: RequestListener,
    private readonly log: Logger,
  ) {}

  addresses(): BoundAddress[] {
    return this.entries.map((e) => e.bound)
  }

  /** Open the configured addresses not open yet, close the ones no longer configured, apply limits. */
  async reconcile(config: GatehouseConfig): Promise<void> {
    const wanted = config.uwsgi_listen.map(parseListenAddress)
    for (const e of [...this.entries]) {
      if (!wanted.some((w) => w.text === e.spec.text)) {
        this.entries.splice(this.entries.indexOf(e), 1)
        e.server.close()
        e.server.closeIdleConnections()
      }
    }
    for (const e of this.entries) {
      e.server.setAllow(config.uwsgi_allow)
      e.server.maxVarsBytes = config.uwsgi_max_vars_bytes
      e.server.headerTimeout = config.limits.header_timeout
    }
    for (const spec of wanted) {
      if (this.entries.some((e) => e.spec.text === spec.text)) continue
      const server = createUwsgiServer(this.handler, {
        allow: config.uwsgi_allow,
        maxVarsBytes: config.uwsgi_max_vars_bytes,
        headerTimeout: config.limits.header_timeout,
        log: this.log,
      })
      const bound = await bind(server, spec)
      server.on('error', (err) => this.log.error({ err, uwsgi_listen: spec.text }, 'uwsgi listener error'))
      this.entries.push({ spec, server, bound })
      this.log.info({ uwsgi_listen: bound.address }, 'listening for uwsgi')
    }
  }

  /** Stop accepting; resolves when every connection has ended. */
  stopAccepting(): Promise<void> {
    const closed = this.entries.map((e) => new Promise<void>((resolve) => e.server.close(() => resolve())))
    this.closeIdle()
    return Promise.all(closed).then(() => {})
  }

  closeIdle(): void {
    for (const e of this.entries) e.server.closeIdleConnections()
  }

  closeAll(): void {
    for (const e of this.entries) e.server.closeAllConnections()
  }
}

async function bind(server: UwsgiServer, spec: ListenAddress): Promise<BoundAddress> {
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
      reject(new GatehouseError('GH_ERR_LISTEN', `${spec.text} (uwsgi): ${reason}`, { cause: err }))
    }
    server.once('error', onError)
    const done = () => {
      server.off('error', onError)
      resolve()
    }
    if (spec.kind === 'unix') server.listen(spec.path, done)
    else server.listen({ host: spec.host, port: spec.port }, done)
  })
  const addr = server.address()
  if (spec.kind === 'unix' || typeof addr === 'string' || addr === null)
    return { address: spec.text, path: spec.kind === 'unix' ? spec.path : String(addr) }
  return {
    address: addr.family === 'IPv6' ? `[${addr.address}]:${addr.port}` : `${addr.address}:${addr.port}`,
    port: addr.port,
  }
}

/** A socket file left by a dead process is removed; one with a live server is an error. */
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
