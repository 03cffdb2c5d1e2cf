/**
 * Gatehouse's FastCGI listeners (`fastcgi_listen`): opened with the HTTP listeners, diffed
 * on reload, drained on close. Requests go to the same listener as HTTP requests, so
 * `fastcgi_pass` from nginx reaches every route.
 */
import type { Logger } from 'pino'
import type { GatehouseConfig } from '../config/schema.js'
import { type BoundAddress, bindServer } from './bind.js'
import { createFastCGIServer, type FastCGIServer, type RequestListener } from './fastcgi-server.js'
import { type ListenAddress, parseListenAddress } from './listen-address.js'

interface Entry {
  spec: ListenAddress
  server: FastCGIServer
  bound: BoundAddress
}

export class FastCGIListeners {
  private readonly entries: Entry[] = []

  constructor(
    private readonly handler: RequestListener,
    private readonly log: Logger,
  ) {}

  addresses(): BoundAddress[] {
    return this.entries.map((e) => e.bound)
  }

  /** The servers, in the order of `fastcgi_listen` (for statistics). */
  servers(): FastCGIServer[] {
    return this.entries.map((e) => e.server)
  }

  /** Open the configured addresses not open yet, close the ones no longer configured, apply limits. */
  async reconcile(config: GatehouseConfig): Promise<void> {
    const wanted = config.fastcgi_listen.map(parseListenAddress)
    for (const e of [...this.entries]) {
      if (!wanted.some((w) => w.text === e.spec.text)) {
        this.entries.splice(this.entries.indexOf(e), 1)
        e.server.close()
        e.server.closeIdleConnections()
      }
    }
    const maxConnections = config.fastcgi_max_connections ?? Number.POSITIVE_INFINITY
    for (const e of this.entries) {
      e.server.setAllow(config.fastcgi_allow)
      e.server.maxParamsBytes = config.fastcgi_max_params_bytes
      e.server.headerTimeout = config.limits.header_timeout
      e.server.idleTimeout = config.fastcgi_idle_timeout
      e.server.maxConnections = maxConnections
    }
    for (const spec of wanted) {
      if (this.entries.some((e) => e.spec.text === spec.text)) continue
      const server = createFastCGIServer(this.handler, {
        allow: config.fastcgi_allow,
        maxParamsBytes: config.fastcgi_max_params_bytes,
        headerTimeout: config.limits.header_timeout,
        idleTimeout: config.fastcgi_idle_timeout,
        ...(config.fastcgi_max_connections !== undefined
          ? { maxConnections: config.fastcgi_max_connections }
          : {}),
        log: this.log,
      })
      const bound = await bindServer(server, spec, 'FastCGI')
      server.on('error', (err) =>
        this.log.error({ err, fastcgi_listen: spec.text }, 'FastCGI listener error'),
      )
      this.entries.push({ spec, server, bound })
      this.log.info({ fastcgi_listen: bound.address }, 'listening for FastCGI')
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
