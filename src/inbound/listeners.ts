/**
 * A gateway protocol's listeners (`uwsgi_listen`, `fastcgi_listen`): opened with the HTTP
 * listeners, diffed on reload (addresses no longer configured are closed, new ones opened,
 * limits applied to the ones kept), drained on close. Requests go to the same listener as
 * HTTP requests, so nginx's `uwsgi_pass` / `fastcgi_pass` reaches every route.
 */
import type { Logger } from 'pino'
import type { z } from 'zod'
import { type BoundAddress, bindServer } from '../core/bind.js'
import { type ListenAddress, parseListenAddress } from '../core/address.js'
import type { ListenerConfig, ListenerDefinition, ListenerServer, RequestListener } from '../core/types.js'

export type { BoundAddress } from '../core/bind.js'

interface Entry<S> {
  spec: ListenAddress
  server: S
  bound: BoundAddress
}

export class InboundListeners<
  Shape extends z.ZodRawShape = z.ZodRawShape,
  S extends ListenerServer = ListenerServer,
> {
  private readonly entries: Entry<S>[] = []

  constructor(
    private readonly protocol: ListenerDefinition<Shape, S>,
    private readonly handler: RequestListener,
    private readonly log: Logger,
  ) {}

  addresses(): BoundAddress[] {
    return this.entries.map((e) => e.bound)
  }

  /** The servers, in the order of the configured addresses. */
  servers(): S[] {
    return this.entries.map((e) => e.server)
  }

  /** Connections and requests each server has accepted (none when the protocol counts none). */
  stats(): { address: string; connections: number; requests: number }[] {
    const { stats } = this.protocol
    if (!stats) return []
    return this.entries.map((e) => ({ address: e.bound.address, ...stats(e.server) }))
  }

  /** Open the configured addresses not open yet, close the ones no longer configured, apply limits. */
  async reconcile(config: ListenerConfig<Shape>): Promise<void> {
    const { protocol } = this
    const wanted = protocol.addresses(config).map(parseListenAddress)
    for (const e of [...this.entries]) {
      if (!wanted.some((w) => w.text === e.spec.text)) {
        this.entries.splice(this.entries.indexOf(e), 1)
        e.server.close()
        e.server.closeIdleConnections()
      }
    }
    for (const e of this.entries) protocol.apply(e.server, config)
    for (const spec of wanted) {
      if (this.entries.some((e) => e.spec.text === spec.text)) continue
      const server = protocol.create(this.handler, config, this.log)
      const bound = await bindServer(server, spec, protocol.label)
      server.on('error', (err) =>
        this.log.error({ err, [protocol.key]: spec.text }, `${protocol.label} listener error`),
      )
      this.entries.push({ spec, server, bound })
      this.log.info({ [protocol.key]: bound.address }, `listening for ${protocol.label}`)
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
