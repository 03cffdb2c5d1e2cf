/**
 * Gatehouse's uwsgi listeners (`uwsgi_listen`): opened with the HTTP listeners, diffed on
 * reload, drained on close. Requests go to the same listener as HTTP requests, so
 * `uwsgi_pass` from nginx reaches every route.
 */
import type { Logger } from 'pino'
import type { GatehouseConfig } from '../config/schema.js'
import { type BoundAddress, bindServer } from './bind.js'
import { type ListenAddress, parseListenAddress } from './listen-address.js'
import { createUwsgiServer, type RequestListener, type UwsgiServer } from './uwsgi-server.js'

export type { BoundAddress } from './bind.js'

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
      const bound = await bindServer(server, spec, 'uwsgi')
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
