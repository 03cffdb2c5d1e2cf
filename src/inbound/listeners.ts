/**
 * A gateway protocol's listeners (`uwsgi_listen`, `fastcgi_listen`): opened with the HTTP
 * listeners, diffed on reload (addresses no longer configured are closed, new ones opened,
 * limits applied to the ones kept), drained on close. Requests go to the same listener as
 * HTTP requests, so nginx's `uwsgi_pass` / `fastcgi_pass` reaches every route.
 */
import type { Server } from 'node:net'
import type { Logger } from 'pino'
import type { GatehouseConfig } from '../config/schema.js'
import { type BoundAddress, bindServer } from '../core/bind.js'
import { type ListenAddress, parseListenAddress } from '../core/address.js'

export type { BoundAddress } from '../core/bind.js'

/** What a listener server offers beyond net.Server: HTTP-like connection closing. */
export interface GatewayServer extends Server {
  closeIdleConnections(): void
  closeAllConnections(): void
}

/** One protocol's part: its config keys, how a server is made and how new limits reach it. */
export interface GatewayProtocol<S extends GatewayServer> {
  /** For messages and log fields: `uwsgi`, `FastCGI`. */
  name: string
  /** The log field naming the address (`uwsgi_listen`). */
  key: string
  addresses(config: GatehouseConfig): readonly string[]
  create(config: GatehouseConfig): S
  /** Apply the (reloaded) config's limits to a server that stays open. */
  apply(server: S, config: GatehouseConfig): void
}

interface Entry<S> {
  spec: ListenAddress
  server: S
  bound: BoundAddress
}

export class GatewayListeners<S extends GatewayServer> {
  private readonly entries: Entry<S>[] = []

  constructor(
    private readonly protocol: GatewayProtocol<S>,
    private readonly log: Logger,
  ) {}

  addresses(): BoundAddress[] {
    return this.entries.map((e) => e.bound)
  }

  /** The servers, in the order of the configured addresses. */
  servers(): S[] {
    return this.entries.map((e) => e.server)
  }

  /** Open the configured addresses not open yet, close the ones no longer configured, apply limits. */
  async reconcile(config: GatehouseConfig): Promise<void> {
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
      const server = protocol.create(config)
      const bound = await bindServer(server, spec, protocol.name)
      server.on('error', (err) =>
        this.log.error({ err, [protocol.key]: spec.text }, `${protocol.name} listener error`),
      )
      this.entries.push({ spec, server, bound })
      this.log.info({ [protocol.key]: bound.address }, `listening for ${protocol.name}`)
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
