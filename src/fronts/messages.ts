/*
 * What the main thread and a front thread say to each other besides leases
 * (src/process/pool-broker.ts carries those, as ['pool', ops]).
 */
import type { GatehouseConfig } from '../config.js'
import type { PoolEntry } from '../process/pool-broker.js'
import type { FrontFigures, RenderedPage } from '../core/types.js'

/** What a front thread starts with (workerData). */
export interface FrontData {
  index: number
  config: GatehouseConfig
  /** The main thread's pools by route key: their settings. */
  pools: Record<string, PoolEntry>
}

/** Main -> front. */
export type ToFront =
  | ['pool', unknown[]]
  /** Switch to this configuration (a reload), then answer 'applied' with the same number. */
  | ['apply', number, GatehouseConfig, Record<string, PoolEntry>]
  /** Stop: after shutdown_delay (or the given delay), stop accepting, finish in-flight requests within `grace` ms, exit. */
  | ['stop', number, number | undefined]
  | ['reopen']
  /** Send the front's own figures ('figures' with the same number). */
  | ['figures', number]
  /** The page a front asked for ('render'). */
  | ['rendered', number, RenderedPage]

/** Front -> main. */
export type FromFront =
  | ['pool', unknown[]]
  | ['ready', string[]]
  | ['failed', string]
  | ['applied', number, string | null]
  | ['figures', number, FrontFigures]
  /** Route N's page for this query, rendered by the main thread (status pages, /metrics). */
  | ['render', number, number, string]
