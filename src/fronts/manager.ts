/*
 * front_processes > 1: the main thread runs the pools, the control API and the listeners'
 * first copy (it serves too: front 0), and starts front threads 1..N-1 that share its
 * listening sockets (each on its own descriptor: copy-fd.ts) and lease its pools' workers
 * (src/process/pool-broker.ts). docs/architecture.md, "Using more than one core", says
 * why threads, and what was measured.
 *
 * A front that dies (an uncaught error ends its thread, not the process) is replaced after
 * a second, on new descriptors; what it held of the pools goes back. A reload reaches every
 * front: the main thread validates the configuration once and sends it; the old pools keep
 * serving the fronts until each has switched. A stop stops every front with the same grace.
 */
import { Worker } from 'node:worker_threads'
import type { Logger } from 'pino'
import type { GatehouseConfig } from '../config.js'
import type { Gatehouse } from '../gatehouse.js'
import type { FrontFigures, FrontGroup, PoolSite } from '../core/types.js'
import { type ListenEntry } from '../core/tls.js'
import { type FrontOp, PoolBroker } from '../process/pool-broker.js'
import type { WorkerPool } from '../process/pool.js'
import { copyDescriptors } from './copy-fd.js'
import type { FromFront, FrontData, ToFront } from './messages.js'

/** How long a replaced front waits before it starts again (a front that dies at once does not spin). */
const RESTART_DELAY_MS = 1000

interface Front {
  index: number
  worker: Worker
  /** Its descriptor of each shared listener, by the listener's key. */
  fds: Map<string, number>
  link: { handle(ops: readonly FrontOp[]): void; detach(): void }
  ready: boolean
}

/** The pools of the main thread, lent to the fronts; made before the Gatehouse that makes the pools. */
export class FrontPools {
  readonly broker = new PoolBroker()

  /** The Gatehouse option: each route's pool is made here and registered for the fronts. */
  readonly site = (key: string): PoolSite => ({
    provide: <T>(build: () => T): T => {
      const pool = build()
      this.broker.register(key, pool as unknown as WorkerPool)
      return pool
    },
  })
}

export class FrontThreads implements FrontGroup {
  private readonly fronts = new Map<number, Front>()
  private stopping = false
  private seq = 0
  private readonly waits = new Map<number, (value: unknown) => void>()

  constructor(
    private readonly gatehouse: Gatehouse,
    private readonly pools: FrontPools,
    private readonly count: number,
    private readonly log: Logger,
  ) {}

  /** Start fronts 1..count-1 and resolve once each listens. */
  async start(): Promise<void> {
    // /metrics (a `metrics` route, the control API) sums every front's figures.
    this.gatehouse.fronts = this
    this.gatehouse.metrics.peers = () => this.figures().then((all) => all.map((f) => f.metrics))
    const started: Promise<void>[] = []
    for (let i = 1; i < this.count; i++) started.push(this.spawn(i))
    await Promise.all(started)
    this.log.info({ fronts: this.count }, `${this.count} front threads serve the listeners`)
  }

  /** A front's configuration: the main one's, each shared listener on the front's own descriptor. */
  private async frontConfig(
    front: { fds: Map<string, number> },
    config: GatehouseConfig,
  ): Promise<GatehouseConfig> {
    const shared = this.gatehouse.sharedListeners()
    const missing = shared.filter((s) => !front.fds.has(s.key))
    const copies = await copyDescriptors(missing.map((s) => s.handle))
    missing.forEach((s, i) => front.fds.set(s.key, copies[i]!))
    const wanted = new Set(shared.map((s) => s.key))
    for (const key of [...front.fds.keys()]) if (!wanted.has(key)) front.fds.delete(key)
    const entries = config.listen as ListenEntry[]
    const listen: ListenEntry[] = []
    for (const s of shared) {
      const entry = entries[s.entry]!
      const address = `fd://${front.fds.get(s.key)!}`
      listen.push(typeof entry === 'string' ? address : { ...entry, address })
    }
    return { ...config, listen } as GatehouseConfig
  }

  private async spawn(index: number): Promise<void> {
    const fds = new Map<string, number>()
    const config = await this.frontConfig({ fds }, this.gatehouse.config)
    const data: FrontData = { index, config, pools: this.pools.broker.entries() }
    const worker = new Worker(new URL('./thread.js', import.meta.url), {
      workerData: data,
      // The thread writes its logs itself (SonicBoom on the same descriptors).
      stdout: false,
      stderr: false,
    })
    const link = this.pools.broker.attach(worker)
    const front: Front = { index, worker, fds, link, ready: false }
    this.fronts.set(index, front)
    await new Promise<void>((resolve, reject) => {
      worker.on('message', (m: FromFront) => {
        switch (m[0]) {
          case 'pool':
            link.handle(m[1] as FrontOp[])
            break
          case 'ready':
            front.ready = true
            resolve()
            break
          case 'failed':
            reject(new Error(`front ${index}: ${m[1]}`))
            break
          case 'render': {
            const [, seq, route, query] = m
            this.gatehouse.renderRoute(route, query).then(
              (page) => worker.postMessage(['rendered', seq, page] satisfies ToFront),
              (err: unknown) =>
                worker.postMessage([
                  'rendered',
                  seq,
                  { status: 500, headers: {}, body: `${err instanceof Error ? err.message : String(err)}\n` },
                ] satisfies ToFront),
            )
            break
          }
          case 'applied':
          case 'figures':
            this.waits.get(m[1])?.(m[0] === 'applied' ? m[2] : m[2])
            this.waits.delete(m[1])
            break
        }
      })
      worker.on('error', (err) => this.log.error({ err, front: index }, 'front thread failed'))
      worker.on('exit', (code) => {
        link.detach()
        if (this.fronts.get(index) === front) this.fronts.delete(index)
        if (!front.ready) reject(new Error(`front ${index} exited (${code}) before it listened`))
        if (this.stopping) return
        this.log.error({ front: index, code }, `front thread ${index} exited; starting another`)
        setTimeout(() => {
          if (!this.stopping)
            this.spawn(index).catch((err: unknown) =>
              this.log.error({ err, front: index }, 'front thread could not start again'),
            )
        }, RESTART_DELAY_MS).unref()
      })
    })
  }

  private ask<T>(front: Front, make: (seq: number) => ToFront): Promise<T> {
    const seq = ++this.seq
    return new Promise<T>((resolve) => {
      this.waits.set(seq, resolve as (v: unknown) => void)
      front.worker.postMessage(make(seq))
    })
  }

  /** A reload switched the main thread to `config`: every front switches too. */
  async swapped(config: GatehouseConfig): Promise<void> {
    await Promise.all(
      [...this.fronts.values()]
        .filter((f) => f.ready)
        .map(async (front) => {
          const frontConfig = await this.frontConfig(front, config)
          const err = await this.ask<string | null>(front, (seq) => [
            'apply',
            seq,
            frontConfig,
            this.pools.broker.entries(),
          ])
          if (err) this.log.error({ front: front.index, err }, 'front thread kept its configuration')
        }),
    )
  }

  /** Every front's figures (the main thread's own come from its Gatehouse). */
  figures(): Promise<FrontFigures[]> {
    return Promise.all(
      [...this.fronts.values()]
        .filter((f) => f.ready)
        .sort((a, b) => a.index - b.index)
        .map((f) => this.ask<FrontFigures>(f, (seq) => ['figures', seq])),
    )
  }

  restart(index: number): boolean {
    const front = this.fronts.get(index)
    if (!front) return false
    this.log.warn({ front: index }, `front thread ${index} stopped at once (control API); starting another`)
    void front.worker.terminate()
    return true
  }

  reopenLogs(): void {
    for (const f of this.fronts.values()) f.worker.postMessage(['reopen'] satisfies ToFront)
  }

  /** Stop every front: they stop accepting, finish within `graceMs`, and exit. */
  async close(graceMs: number, delayMs?: number): Promise<void> {
    this.stopping = true
    await Promise.all(
      [...this.fronts.values()].map(
        (f) =>
          new Promise<void>((resolve) => {
            f.worker.once('exit', () => resolve())
            f.worker.postMessage(['stop', graceMs, delayMs] satisfies ToFront)
          }),
      ),
    )
  }

  /** The fronts now (for the status): index and whether it serves. */
  list(): { index: number; ready: boolean; threadId: number }[] {
    return [...this.fronts.values()].map((f) => ({
      index: f.index,
      ready: f.ready,
      threadId: f.worker.threadId,
    }))
  }
}
