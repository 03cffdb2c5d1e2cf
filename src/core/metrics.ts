/*
 * Prometheus metrics of one Gatehouse (issue 16 item 2), in prom-client's registry (the
 * Prometheus project's Node client: its text and OpenMetrics exposition, histograms and
 * label handling are what scrapers and promtool expect). Front figures are counted per
 * request only while some route shows them (a `metrics` action), so a server without one
 * pays nothing. The pools' figures are added by the `metrics` action
 * (gateways/status/pool-metrics.ts), read from the pools when scraped.
 */
import { Counter, Gauge, Histogram, Registry } from 'prom-client'

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

export class Metrics {
  readonly registry = new Registry()
  private readonly requests: Counter<'route' | 'method' | 'status'>
  private readonly duration: Histogram<'route'>
  private readonly bytesIn: Counter
  private readonly bytesOut: Counter

  /** `connections` and `websockets`: the server's open counts when scraped. */
  constructor(connections: () => Promise<number>, websockets: () => number) {
    const registers = [this.registry]
    this.requests = new Counter({
      name: 'gatehouse_http_requests_total',
      help: 'HTTP requests answered, by route, method (other methods as OTHER) and status class',
      labelNames: ['route', 'method', 'status'],
      registers,
    })
    this.duration = new Histogram({
      name: 'gatehouse_http_request_duration_seconds',
      help: 'Time from the request head to the end of the response, by route',
      labelNames: ['route'],
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers,
    })
    this.bytesIn = new Counter({
      name: 'gatehouse_http_received_bytes_total',
      help: 'Bytes read from HTTP clients (request heads and bodies)',
      registers,
    })
    this.bytesOut = new Counter({
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
  }

  observe(s: RequestSample): void {
    const method = METHODS.has(s.method) ? s.method : 'OTHER'
    this.requests.inc({ route: s.route, method, status: `${Math.floor(s.status / 100)}xx` })
    this.duration.observe({ route: s.route }, s.seconds)
    if (s.bytesIn > 0) this.bytesIn.inc(s.bytesIn)
    if (s.bytesOut > 0) this.bytesOut.inc(s.bytesOut)
  }

  /** The Prometheus text exposition (version 0.0.4), which every scraper reads. */
  async render(): Promise<{ contentType: string; body: string }> {
    return { contentType: this.registry.contentType, body: await this.registry.metrics() }
  }
}
