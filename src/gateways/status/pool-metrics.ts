/*
 * The worker pools' figures in a server's metrics registry (issue 16): php-fpm exporter's
 * per-pool figures plus worker restarts by cause, read from the live pools when scraped.
 */
import type { Counter, Gauge, Registry } from 'prom-client'
import { promClient } from '../../core/metrics.js'
import { livePools } from '../../process/pool.js'
import { upstreamStats } from '../../core/upstream/registry.js'

const added = new WeakSet<Registry>()

/** Add the pool metrics to `registry`, once. */
export function addPoolMetrics(registry: Registry): void {
  if (added.has(registry)) return
  added.add(registry)
  poolMetrics(registry)
}

/** Per pool, as php-fpm's exporter has them, plus worker restarts by cause. */
function poolMetrics(registry: Registry): void {
  // Loaded here, when a `metrics` route is made, not with the status gateway (core/metrics.ts).
  const { Counter, Gauge } = promClient()
  const registers = [registry]
  const pools = () => livePools().filter((p) => !p.isClosing)
  // Every figure is read from the pools when scraped: the metric is reset and set again.
  const collected = <M extends Gauge | Counter>(
    name: string,
    help: string,
    labelNames: string[],
    set: (m: M) => void,
  ) => ({
    name,
    help,
    labelNames,
    registers,
    collect(this: M) {
      this.reset()
      set(this)
    },
  })
  const gauge = (...args: Parameters<typeof collected<Gauge>>) => new Gauge(collected<Gauge>(...args))
  const total = (...args: Parameters<typeof collected<Counter>>) => new Counter(collected<Counter>(...args))
  gauge('gatehouse_pool_processes', 'Worker processes of a pool, by state', ['pool', 'state'], (g) => {
    for (const p of pools()) {
      const s = p.status()
      g.set({ pool: s.pool, state: 'idle' }, s.idleProcesses)
      g.set({ pool: s.pool, state: 'active' }, s.activeProcesses)
    }
  })
  gauge('gatehouse_pool_listen_queue', 'Requests waiting for a worker', ['pool'], (g) => {
    for (const p of pools()) g.set({ pool: p.settings.name }, p.status().listenQueue)
  })
  gauge('gatehouse_pool_failed', '1 while the pool is failed (crash-loop guard), else 0', ['pool'], (g) => {
    for (const p of pools()) g.set({ pool: p.settings.name }, p.failure ? 1 : 0)
  })
  total('gatehouse_pool_accepted_requests_total', 'Requests a pool took', ['pool'], (c) => {
    for (const p of pools()) c.inc({ pool: p.settings.name }, p.status().acceptedConn)
  })
  total(
    'gatehouse_pool_max_children_reached_total',
    'Times a pool was at max_children with requests waiting',
    ['pool'],
    (c) => {
      for (const p of pools()) c.inc({ pool: p.settings.name }, p.status().maxChildrenReached)
    },
  )
  total('gatehouse_pool_slow_requests_total', 'Requests past request_slowlog_timeout', ['pool'], (c) => {
    for (const p of pools()) c.inc({ pool: p.settings.name }, p.status().slowRequests)
  })
  total(
    'gatehouse_pool_queued_requests_total',
    'Requests that waited in the queue for a worker',
    ['pool'],
    (c) => {
      for (const p of pools()) c.inc({ pool: p.settings.name }, p.status().queuedRequests)
    },
  )
  total(
    'gatehouse_pool_moved_requests_total',
    'Pipelined requests sent to another worker because theirs stalled before starting them',
    ['pool'],
    (c) => {
      for (const p of pools()) c.inc({ pool: p.settings.name }, p.status().movedRequests)
    },
  )
  total(
    'gatehouse_pool_queue_wait_seconds_total',
    'Time the queued requests waited for a worker, in all (divide by gatehouse_pool_queued_requests_total)',
    ['pool'],
    (c) => {
      for (const p of pools()) c.inc({ pool: p.settings.name }, p.status().queueWaitMs / 1000)
    },
  )
  total(
    'gatehouse_bridge_frames_total',
    'Frames over the Python bridge of a pool, by direction (sent to the workers, received)',
    ['pool', 'direction'],
    (c) => {
      for (const p of pools()) {
        if (p.traffic.framesSent === 0 && p.traffic.framesReceived === 0) continue
        c.inc({ pool: p.settings.name, direction: 'sent' }, p.traffic.framesSent)
        c.inc({ pool: p.settings.name, direction: 'received' }, p.traffic.framesReceived)
      }
    },
  )
  total(
    'gatehouse_pool_worker_restarts_total',
    'Workers replaced, by cause: max_requests, max_rss, timeout (killed past its request timeout), crash (died unexpectedly), reload',
    ['pool', 'cause'],
    (c) => {
      for (const p of pools()) {
        const s = p.status()
        const pool = s.pool
        c.inc({ pool, cause: 'max_requests' }, s.recycledMaxRequests)
        c.inc({ pool, cause: 'max_rss' }, s.recycledMaxRss)
        c.inc({ pool, cause: 'timeout' }, s.terminatedRequests)
        c.inc({ pool, cause: 'crash' }, s.workerDeaths)
        c.inc({ pool, cause: 'reload' }, s.reloadedWorkers)
      }
    },
  )
  // Upstream groups (src/core/upstream/): per server of each group.
  const servers = function* () {
    for (const g of upstreamStats())
      for (const s of g.servers) yield { labels: { upstream: g.name, server: s.address }, s }
  }
  gauge(
    'gatehouse_upstream_server_state',
    'An upstream server: 1 for its state now (up, down, checking), 0 for the others',
    ['upstream', 'server', 'state'],
    (g) => {
      for (const { labels, s } of servers())
        for (const state of ['up', 'down', 'checking']) g.set({ ...labels, state }, s.state === state ? 1 : 0)
    },
  )
  gauge(
    'gatehouse_upstream_active_requests',
    'Requests in flight on an upstream server',
    ['upstream', 'server'],
    (g) => {
      for (const { labels, s } of servers()) g.set(labels, s.active)
    },
  )
  total(
    'gatehouse_upstream_requests_total',
    'Requests (tries) given to an upstream server',
    ['upstream', 'server'],
    (c) => {
      for (const { labels, s } of servers()) c.inc(labels, s.requests)
    },
  )
  total(
    'gatehouse_upstream_failures_total',
    'Tries that failed on an upstream server (connect error, timeout, a next_upstream status)',
    ['upstream', 'server'],
    (c) => {
      for (const { labels, s } of servers()) c.inc(labels, s.failures)
    },
  )
  total(
    'gatehouse_upstream_health_checks_total',
    'Active health probes of an upstream server',
    ['upstream', 'server'],
    (c) => {
      for (const { labels, s } of servers()) c.inc(labels, s.checks)
    },
  )
  total(
    'gatehouse_upstream_health_check_failures_total',
    'Active health probes of an upstream server that failed',
    ['upstream', 'server'],
    (c) => {
      for (const { labels, s } of servers()) c.inc(labels, s.check_failures)
    },
  )
}
