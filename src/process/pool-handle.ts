/*
 * What a gateway uses of a worker pool. In the process that runs the pools it is the
 * WorkerPool itself; in a front thread (front_processes > 1) it is a RemoteWorkerPool whose
 * leases are granted by the main thread's WorkerPool (src/process/pool-broker.ts), so the
 * pool's capacity, its bounded queue and its 503s hold for every front at once.
 */
import type { GatehouseError } from '../core/errors.js'
import type { CancelLike, RequestInfo, WorkerLease } from './lease.js'
import type { PoolSettings } from './settings.js'

export interface PoolHandle {
  readonly settings: PoolSettings
  /** Counted by whoever talks to the workers (the Python bridge's connections). */
  readonly traffic: { framesSent: number; framesReceived: number }
  /** The crash loop that stopped the pool, or null. */
  readonly failure: GatehouseError | null
  /**
   * Other threads lease these workers too (front_processes > 1): a connection to a worker
   * that serves one connection at a time (php-cgi) must not be kept across requests.
   */
  readonly shared: boolean
  start(): Promise<void>
  acquire(info: RequestInfo, signal?: CancelLike): Promise<WorkerLease>
  /** A lease at once when the pool grants one without waiting; undefined when acquire() is needed. */
  tryAcquire(info: RequestInfo): WorkerLease | undefined
  reload(): Promise<void>
  close(graceMs: number): Promise<void>
  onWorkerStopping(listener: (workerId: number) => void): void
}
