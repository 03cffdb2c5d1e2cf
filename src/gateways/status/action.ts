/*
 * The `status` action: php-fpm's status page (pm.status_path) and ping page (ping.path) for
 * the managed worker pools, byte for byte in php-fpm 8.2's formats so existing dashboards,
 * exporters and scripts read it: text (default), `?json`, `?openmetrics`, `?html`, `?xml`,
 * and `&full` for one block per worker (text and json). Field names and their order are
 * php-fpm's (fpm_status.c); the test compares them with a real php-fpm's page.
 * docs/process-manager.md is the user's view.
 */
import { z } from 'zod'
import { strictObject } from '../../core/schema/strict.js'
import { sendStatus } from '../../core/respond.js'
import { clfTime } from '../../core/logging.js'
import { addPoolMetrics } from './pool-metrics.js'
import { livePools, type PoolStatus, type WorkerStatus } from '../../process/pool.js'
import type { UpstreamGroupStats } from '../../core/upstream/group.js'
import { upstreamStats } from '../../core/upstream/registry.js'
import type {
  ActionDefinition,
  Handler,
  RenderedPage,
  RequestContext,
  ServerState,
} from '../../core/types.js'

export function statusSchema() {
  return strictObject({
    /**
     * What the route shows: `pool` (php-fpm's status page of one pool), `ping` (php-fpm's
     * ping page), `pools` (every pool of the server as one JSON document), `ready` (a
     * readiness check: 200 while no pool is failed and the server is not draining, 503
     * naming why), `live` (a liveness check: 200 while the server answers at all),
     * `upstreams` (every upstream group's servers: state, connections, requests, failures;
     * JSON, or an HTML table with `?html`).
     */
    show: z.enum(['pool', 'ping', 'pools', 'ready', 'live', 'upstreams']).default('pool'),
    /** The pool's name (its `workers.name`); default: the first pool's name. */
    pool: z.string().min(1).optional(),
    /** The ping page's answer (php-fpm's ping.response). */
    ping_response: z.string().default('pong'),
  })
}

export type StatusOptions = z.output<ReturnType<typeof statusSchema>>

/** php-fpm answers every status request with these, so no cache keeps a stale page. */
const NO_CACHE = {
  expires: 'Thu, 01 Jan 1970 00:00:00 GMT',
  'cache-control': 'no-cache, no-store, must-revalidate, max-age=0',
}

export type StatusFormat = 'text' | 'json' | 'openmetrics' | 'html' | 'xml'

/** The summary fields in php-fpm's order: [text label, value for text, value for json/xml]. */
function summary(s: PoolStatus): [string, string | number][] {
  return [
    ['pool', s.pool],
    ['process manager', s.processManager],
    ['start time', s.startTime],
    ['start since', s.startSince],
    ['accepted conn', s.acceptedConn],
    ['listen queue', s.listenQueue],
    ['max listen queue', s.maxListenQueue],
    ['listen queue len', s.listenQueueLen],
    ['idle processes', s.idleProcesses],
    ['active processes', s.activeProcesses],
    ['total processes', s.totalProcesses],
    ['max active processes', s.maxActiveProcesses],
    ['max children reached', s.maxChildrenReached],
    ['slow requests', s.slowRequests],
  ]
}

/** One worker's fields in php-fpm's order (`request URI` is `request uri` in JSON). */
function processFields(w: WorkerStatus, now: number): [string, string | number][] {
  return [
    ['pid', w.pid],
    ['state', w.state],
    ['start time', w.startTime],
    ['start since', Math.max(0, now - w.startTime)],
    ['requests', w.requests],
    ['request duration', w.requestDuration],
    ['request method', w.requestMethod],
    ['request URI', w.requestUri],
    ['content length', w.contentLength],
    ['user', '-'],
    ['script', w.script],
    ['last request cpu', '0.00'],
    ['last request memory', w.lastRequestMemory],
  ]
}

const textValue = (label: string, value: string | number) =>
  label === 'start time' ? clfTime(new Date(Number(value) * 1000)) : String(value)

const line = (label: string, value: string) => `${`${label}:`.padEnd(22)}${value}\n`

/** PHP's json_encode escapes `/` as `\/`. */
const jsonString = (v: string) => JSON.stringify(v).replace(/\//g, '\\/')
const jsonValue = (label: string, v: string | number) =>
  typeof v === 'number' || label === 'last request cpu' ? String(v) : jsonString(v)

function jsonObject(fields: [string, string | number][]): string {
  return `{${fields.map(([k, v]) => `${jsonString(k.toLowerCase())}:${jsonValue(k, v)}`).join(',')}}`
}

/**
 * Gatehouse's own lines, added after php-fpm's summary only while the pool is failed (its
 * crash-loop guard stopped respawning): php-fpm's page is unchanged while the pool works.
 */
function failedFields(s: PoolStatus): [string, string | number][] {
  if (!s.failed) return []
  return [
    ['failed', s.failedReason ?? 'yes'],
    ['next retry', s.nextRetry ?? 0],
  ]
}

/** One pool's page in php-fpm's format; `full` adds a block per worker (text and json). */
export function formatStatus(
  s: PoolStatus,
  format: StatusFormat,
  full: boolean,
): { contentType: string; body: string } {
  const now = Math.floor(Date.now() / 1000)
  const fields = [...summary(s), ...failedFields(s)]
  switch (format) {
    case 'json': {
      const head = jsonObject(fields)
      if (!full) return { contentType: 'application/json', body: head }
      const procs = s.workers.map((w) => jsonObject(processFields(w, now))).join(',')
      return { contentType: 'application/json', body: `${head.slice(0, -1)}, "processes":[${procs}]}` }
    }
    case 'openmetrics':
      return {
        contentType: 'application/openmetrics-text; version=1.0.0; charset=utf-8',
        body: openMetrics(s),
      }
    case 'html': {
      const rows = fields
        .map(([k, v]) => `<tr><th>${k}</th><td>${escapeHtml(textValue(k, v))}</td></tr>\n`)
        .join('')
      // php-fpm's title for a php pool (tools match it); a Python pool's names itself.
      const title =
        s.kind === undefined || s.kind === 'php' ? 'PHP-FPM Status Page' : `Gatehouse ${s.kind} pool status`
      return {
        contentType: 'text/html;charset=UTF-8',
        body: `<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Strict//EN" "http://www.w3.org/TR/xhtml1/DTD/xhtml1-strict.dtd">\n<html xmlns="http://www.w3.org/1999/xhtml" xml:lang="en" lang="en">\n<head><title>${title}</title></head>\n<body>\n<table>\n${rows}</table>\n</body></html>`,
      }
    }
    case 'xml': {
      const rows = fields
        .map(([k, v]) => {
          const tag = k.replace(/ /g, '-')
          return `<${tag}>${escapeHtml(String(v))}</${tag}>\n`
        })
        .join('')
      return {
        contentType: 'text/xml;charset=UTF-8',
        body: `<?xml version="1.0" ?>\n<status>\n${rows}</status>`,
      }
    }
    default: {
      let body = fields
        .map(([k, v]) =>
          line(k, k === 'next retry' && v !== 0 ? clfTime(new Date(Number(v) * 1000)) : textValue(k, v)),
        )
        .join('')
      if (full)
        for (const w of s.workers)
          body += `\n************************\n${processFields(w, now)
            .map(([k, v]) => line(k, textValue(k, v)))
            .join('')}`
      return { contentType: 'text/plain;charset=UTF-8', body }
    }
  }
}

/**
 * `?openmetrics`: a php pool's metrics are php-fpm's (`phpfpm_*`, its help texts and
 * layout, for the php-fpm exporters); any other pool's (Python) are the same figures as
 * `gatehouse_pool_*` with help texts that do not name PHP-FPM.
 */
function openMetrics(s: PoolStatus): string {
  const php = s.kind === 'php'
  const prefix = php ? 'phpfpm_' : 'gatehouse_pool_'
  // php-fpm's names and types are kept for its exporters; our own follow Prometheus's rules
  // (promtool): a counter's name ends in _total, and a maximum or an age is a gauge.
  const metric = (name: string, type: string, help: string, value: number, typeFirst = false) => {
    if (!php && type === 'counter') {
      if (name.startsWith('max_') || name === 'start_since') type = 'gauge'
      else name = `${name}_total`
    }
    return typeFirst && php
      ? `# TYPE ${prefix}${name} ${type}\n# HELP ${prefix}${name} ${help}\n${prefix}${name} ${value}\n`
      : `# HELP ${prefix}${name} ${help}\n# TYPE ${prefix}${name} ${type}\n${prefix}${name} ${value}\n`
  }
  const since = php ? 'FPM' : 'the pool'
  return [
    metric(
      'up',
      'gauge',
      php
        ? `Could pool ${s.pool} using a ${s.processManager} PM on PHP-FPM be reached?`
        : `Could pool ${s.pool} be reached?`,
      s.failed ? 0 : 1,
    ),
    metric('start_since', 'counter', `The number of seconds since ${since} has started.`, s.startSince),
    metric('accepted_connections', 'counter', 'The number of requests accepted by the pool.', s.acceptedConn),
    metric(
      'listen_queue',
      'gauge',
      'The number of requests in the queue of pending connections.',
      s.listenQueue,
    ),
    metric(
      'max_listen_queue',
      'counter',
      `The maximum number of requests in the queue of pending connections since ${since} has started.`,
      s.maxListenQueue,
    ),
    // php-fpm 8.2 writes TYPE before HELP for this one metric.
    metric(
      'listen_queue_length',
      'gauge',
      'The size of the socket queue of pending connections.',
      s.listenQueueLen,
      true,
    ),
    metric('idle_processes', 'gauge', 'The number of idle processes.', s.idleProcesses),
    metric('active_processes', 'gauge', 'The number of active processes.', s.activeProcesses),
    metric('total_processes', 'gauge', 'The number of idle + active processes.', s.totalProcesses),
    metric(
      'max_active_processes',
      'counter',
      `The maximum number of active processes since ${since} has started.`,
      s.maxActiveProcesses,
    ),
    metric(
      'max_children_reached',
      'counter',
      php
        ? "The number of times, the process limit has been reached, when pm tries to start more children (works only for pm 'dynamic' and 'ondemand')."
        : 'The number of times the process limit has been reached when more workers were wanted.',
      s.maxChildrenReached,
    ),
    metric(
      'slow_requests',
      'counter',
      php
        ? "The number of requests that exceeded your 'request_slowlog_timeout' value."
        : 'The number of requests that ran longer than the slow request log timeout.',
      s.slowRequests,
    ),
    '# EOF\n',
  ].join('')
}

function escapeHtml(v: string): string {
  return v.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;')
}

/** Every live pool, php-fpm's JSON fields with `processes`, then Gatehouse's own figures. */
export function allPoolsJson(): string {
  const now = Math.floor(Date.now() / 1000)
  const pools = livePools().map((pool) => {
    const s = pool.status()
    const head = jsonObject(summary(s)).slice(0, -1)
    const procs = s.workers.map((w) => jsonObject(processFields(w, now))).join(',')
    const own = `"terminated requests":${s.terminatedRequests},"worker deaths":${s.workerDeaths},"reloads":${s.reloads},"failed":${s.failed},"failed reason":${s.failedReason === null ? 'null' : jsonString(s.failedReason)},"next retry":${s.nextRetry},"start retries":${s.startRetries}`
    return `${head},${own},"processes":[${procs}]}`
  })
  return `{"pools":[${pools.join(',')}]}\n`
}

/** Every upstream group with its servers, as JSON (`show = "upstreams"`, the control API's /status). */
export function upstreamsJson(): string {
  return `${JSON.stringify({ upstreams: upstreamStats() })}\n`
}

/** The same as an HTML page: one table per group. */
export function upstreamsHtml(groups: UpstreamGroupStats[] = upstreamStats()): string {
  const columns = [
    'server',
    'weight',
    'backup',
    'state',
    'active',
    'max conns',
    'requests',
    'failures',
    'checks',
    'check failures',
    'last error',
  ]
  const tables = groups.map((g) => {
    const rows = g.servers.map((s) => {
      const cells = [
        s.address,
        s.weight,
        s.backup ? 'yes' : '',
        s.state,
        s.active,
        s.max_conns || '-',
        s.requests,
        s.failures,
        s.checks,
        s.check_failures,
        s.last_error ?? '',
      ]
      return `<tr class="${s.state}">${cells.map((c) => `<td>${escapeHtml(String(c))}</td>`).join('')}</tr>`
    })
    return `<h2>${escapeHtml(g.name)} (${g.balance})</h2>\n<table>\n<tr>${columns.map((c) => `<th>${c}</th>`).join('')}</tr>\n${rows.join('\n')}\n</table>`
  })
  return `<!DOCTYPE html>\n<html lang="en">\n<head><meta charset="utf-8"><title>upstreams</title></head>\n<body>\n${tables.join('\n') || '<p>no upstream group</p>'}\n</body></html>\n`
}

/** The query's format (`json`, `openmetrics`, `html`, `xml` as php-fpm reads them) and `full`. */
export function statusQuery(query: string): { format: StatusFormat; full: boolean } {
  const keys = new Set(query.split('&').map((p) => p.split('=')[0]))
  const format: StatusFormat = keys.has('json')
    ? 'json'
    : keys.has('openmetrics')
      ? 'openmetrics'
      : keys.has('html')
        ? 'html'
        : keys.has('xml')
          ? 'xml'
          : 'text'
  return { format, full: keys.has('full') }
}

export class StatusHandler implements Handler {
  constructor(
    private readonly options: StatusOptions,
    private readonly server?: ServerState,
    private readonly route?: number,
  ) {}

  async handle(ctx: RequestContext): Promise<void> {
    const o = this.options
    // A front thread (front_processes > 1): the pools are the main thread's, which renders
    // the page (the ping and liveness answers are the front's own).
    const relay = this.server?.relay
    const page =
      relay && this.route !== undefined && o.show !== 'ping' && o.show !== 'live'
        ? await relay(this.route, ctx.query)
        : this.render(ctx.query)
    sendStatus(ctx.res, page.status, { headers: page.headers, body: page.body, head: ctx.method === 'HEAD' })
  }

  /** The page for a request with this query string (no response written). */
  render(query: string): RenderedPage {
    const o = this.options
    if (o.show === 'ping') {
      return {
        status: 200,
        headers: { 'content-type': 'text/plain;charset=UTF-8', ...NO_CACHE },
        body: o.ping_response,
      }
    }
    if (o.show === 'live') {
      return {
        status: 200,
        headers: { 'content-type': 'text/plain;charset=UTF-8', ...NO_CACHE },
        body: 'alive\n',
      }
    }
    if (o.show === 'ready') {
      // Not ready while draining (SIGTERM, shutdown_delay) or while a pool is failed (its
      // route answers 503 until a retry starts a worker); pools being replaced by a reload
      // are not looked at.
      const why = livePools()
        .filter((p) => !p.isClosing && p.failure !== null)
        .map((p) => `pool ${p.settings.name} failed: ${p.failure!.message}\n`)
      if (this.server?.draining) why.unshift('draining: the server is stopping\n')
      return {
        status: why.length === 0 ? 200 : 503,
        headers: { 'content-type': 'text/plain;charset=UTF-8', ...NO_CACHE },
        body: why.length === 0 ? 'ready\n' : why.join(''),
      }
    }
    if (o.show === 'pools') {
      return {
        status: 200,
        headers: { 'content-type': 'application/json', ...NO_CACHE },
        body: allPoolsJson(),
      }
    }
    if (o.show === 'upstreams') {
      const html = statusQuery(query).format === 'html'
      return {
        status: 200,
        headers: { 'content-type': html ? 'text/html;charset=UTF-8' : 'application/json', ...NO_CACHE },
        body: html ? upstreamsHtml() : upstreamsJson(),
      }
    }
    const pools = livePools()
    // By name, the newest: after a config reload the old pool lives on until it has drained.
    const name = o.pool ?? pools[0]?.settings.name
    const pool = pools.filter((p) => p.settings.name === name).at(-1)
    if (!pool) {
      return {
        status: 503,
        headers: NO_CACHE,
        body:
          o.pool === undefined
            ? 'no worker pool is running\n'
            : `no worker pool named ${o.pool} is running\n`,
      }
    }
    const { format, full } = statusQuery(query)
    const page = formatStatus(pool.status(), format, full)
    return { status: 200, headers: { 'content-type': page.contentType, ...NO_CACHE }, body: page.body }
  }
}

export const statusAction: ActionDefinition<StatusOptions> = {
  name: 'status',
  summary: "php-fpm's status and ping pages for the managed worker pools (text, json, openmetrics; full)",
  defaultMethods: ['GET', 'HEAD'],
  schema: statusSchema,
  create: (options, services) => new StatusHandler(options, services.server, services.route),
}

/**
 * The `metrics` action: the server's Prometheus metrics (issue 16), for a scraper. What is
 * counted is documented in docs/configuration.md (Metrics).
 */
export const metricsAction: ActionDefinition<Record<string, never>> = {
  name: 'metrics',
  summary: 'Prometheus metrics of the server and its worker pools (text exposition 0.0.4)',
  defaultMethods: ['GET', 'HEAD'],
  schema: () => strictObject({}),
  create: (_options, services) => {
    const server = services.server
    if (server) addPoolMetrics(server.metrics.registry)
    const render = async (): Promise<RenderedPage> => {
      if (!server) return { status: 503, headers: {}, body: 'no server metrics here\n' }
      const { contentType, body } = await server.metrics.render()
      return { status: 200, headers: { 'content-type': contentType, ...NO_CACHE }, body }
    }
    return {
      render,
      async handle(ctx) {
        // A front thread: the main thread sums every front's figures and its pools'.
        const page =
          server?.relay && services.route !== undefined
            ? await server.relay(services.route, ctx.query)
            : await render()
        sendStatus(ctx.res, page.status, {
          headers: page.headers,
          body: page.body,
          head: ctx.method === 'HEAD',
        })
      },
    }
  },
}
