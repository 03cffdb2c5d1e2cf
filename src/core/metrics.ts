/*
 * Prometheus metrics of one Gatehouse (issue 16 item 2), in prom-client's registry (the
 * Prometheus project's Node client: its text and OpenMetrics exposition, histograms and
 * label handling are what scrapers and promtool expect). Front figures are counted per
 * request only while some route shows them (a `metrics` action), so a server without one
 * pays nothing. The pools' figures are added by the `metrics` action
 * (gateways/status/pool-metrics.ts), read from the pools when scraped.
 */
import { createRequire } from 'node:module'
import type * as PromClientModule from 'prom-client'
import type { Counter, Histogram, Registry } from 'prom-client'

type PromClient = typeof PromClientModule
let loaded: PromClient | undefined

/**
 * prom-client, loaded the first time a server counts or shows metrics: a server without a
 * `metrics` route never loads it (about 4 MB of RSS: issue 13 item 4). It is a CommonJS
 * package, so `require` loads it synchronously, where the counting starts.
 */
export function promClient(): PromClient {
  loaded ??= createRequire(import.meta.url)('prom-client') as PromClient
  return loaded
}

/** What a finished request adds. */
export interface RequestSample {
  route: string
  method: string
  status: number
  seconds: number
  bytesIn: number
  bytesOut: number
}

const METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'])

interface Instruments {
  registry: Registry
  requests: Counter<'route' | 'method' | 'status'>
  duration: Histogram<'route'>
  bytesIn: Counter
  bytesOut: Counter
}

export class Metrics {
  private made: Instruments | undefined

  /** `connections` and `websockets`: the server's open counts when scraped. */
  constructor(
    private readonly connections: () => Promise<number>,
    private readonly websockets: () => number,
  ) {}

  /** The registry and the front's instruments, made (and prom-client loaded) on first use. */
  private get m(): Instruments {
    this.made ??= this.make()
    return this.made
  }

  get registry(): Registry {
    return this.m.registry
  }

  private make(): Instruments {
    const { Counter, Gauge, Histogram, Registry } = promClient()
    const { connections, websockets } = this
    const registry = new Registry()
    const registers = [registry]
    const requests = new Counter({
      name: 'gatehouse_http_requests_total',
      help: 'HTTP requests answered, by route, method (other methods as OTHER) and status class',
      labelNames: ['route', 'method', 'status'],
      registers,
    })
    const duration = new Histogram({
      name: 'gatehouse_http_request_duration_seconds',
      help: 'Time from the request head to the end of the response, by route',
      labelNames: ['route'],
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers,
    })
    const bytesIn = new Counter({
      name: 'gatehouse_http_received_bytes_total',
      help: 'Bytes read from HTTP clients (request heads and bodies)',
      registers,
    })
    const bytesOut = new Counter({
      name: 'gatehouse_http_sent_bytes_total',
      help: 'Bytes written to HTTP clients (response heads and bodies)',
      registers,
    })
    new Gauge({
      name: 'gatehouse_http_open_connections',
      help: 'Open HTTP client connections',
      registers,
      async collect() {
        this.set(await connections())
      },
    })
    new Gauge({
      name: 'gatehouse_websockets_open',
      help: 'Open WebSocket (upgraded) connections',
      registers,
      collect() {
        this.set(websockets())
      },
    })
    return { registry, requests, duration, bytesIn, bytesOut }
  }

  observe(s: RequestSample): void {
    const m = this.m
    const method = METHODS.has(s.method) ? s.method : 'OTHER'
    m.requests.inc({ route: s.route, method, status: `${Math.floor(s.status / 100)}xx` })
    m.duration.observe({ route: s.route }, s.seconds)
    if (s.bytesIn > 0) m.bytesIn.inc(s.bytesIn)
    if (s.bytesOut > 0) m.bytesOut.inc(s.bytesOut)
  }

  /**
   * With front threads (front_processes > 1), the other fronts' metrics as prom-client's
   * JSON: render() sums them with this thread's (prom-client's AggregatorRegistry, made for
   * cluster workers: counters and histograms add up, per label set).
   */
  peers: (() => Promise<unknown[][]>) | undefined

  /** The Prometheus text exposition (version 0.0.4), which every scraper reads. */
  async render(): Promise<{ contentType: string; body: string }> {
    const { registry } = this.m
    return { contentType: registry.contentType, body: await (await this.summed()).metrics() }
  }

  /** Every metric as prom-client's JSON, the fronts' summed in (the control API's /status). */
  async json(): Promise<Awaited<ReturnType<Registry['getMetricsAsJSON']>>> {
    return (await this.summed()).getMetricsAsJSON()
  }

  private async summed(): Promise<Registry> {
    const { registry } = this.m
    if (!this.peers) return registry
    const all = [await registry.getMetricsAsJSON(), ...(await this.peers())]
    return promClient().AggregatorRegistry.aggregate(all as never)
  }
}
