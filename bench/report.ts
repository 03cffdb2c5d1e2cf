/*
 * The results of a bench run: the JSON shape written to bench/results/, the medians the
 * table shows, and the table itself (Markdown, printed and appended to docs/benchmarks.md).
 */
import { type SocketErrors, totalSocketErrors, type WrkResult } from './wrk.js'

export interface RunSample {
  /** 0-based repetition. */
  repetition: number
  /** 0 when this side ran first in its repetition, 1 when second. */
  order: number
  startedAt: string
  wrk: WrkResult
  /** Peak of the summed VmRSS of the server's process tree while wrk ran. */
  peakRssBytes: number
  rssSamples: number
  /**
   * CPU microseconds per request while wrk ran (user + system, /proc): the root process
   * (Node, nginx's master) and its descendants (workers) apart, and the scenario's shared
   * backend (the proxied server), when it has one. Absent in older results.
   */
  cpuUsPerRequest?: { root: number; others: number; backend?: number }
  /** wrk's report as printed. */
  rawOutput: string
}

export interface SideSummary {
  /** Medians over the repetitions. */
  requestsPerSecond: number
  p50Ms: number
  p99Ms: number
  /** Totals over the repetitions. */
  non2xx3xx: number
  socketErrors: SocketErrors
  /** Maximum over the repetitions. */
  peakRssMB: number
  /** Medians over the repetitions that measured it (NaN when none did). */
  cpuUsRoot: number
  cpuUsOthers: number
  /** The shared backend's, while this side ran (NaN without one). */
  cpuUsBackend: number
}

export interface SideResult {
  server: string
  runs: RunSample[]
  summary: SideSummary
  /** Anything the server wrote to stdout/stderr (warnings), trimmed. */
  output?: string
}

export interface PreflightResult {
  status: number
  bodyBytes: number
  contentType: string | undefined
}

export interface ScenarioResult {
  name: string
  description: string
  path: string
  status: 'ok' | 'skipped' | 'failed'
  /** Why it was skipped or failed. */
  reason?: string
  preflight?: { gatehouse: PreflightResult; peer: PreflightResult; bodiesEqual: boolean }
  gatehouse?: SideResult
  peer?: SideResult
  /** Gatehouse median req/s divided by the peer's. */
  ratio?: number
}

export interface BenchOptions {
  scenarios: string[]
  durationSeconds: number
  warmupSeconds: number
  repeat: number
  connections: number
  threads: number
  append: boolean
}

export interface MachineInfo {
  hostname: string
  cpus: number
  cpuModel: string
  kernel: string
  node: string
  wrk: string
  nginx: string
  commit: string
  /** 1, 5 and 15 minute load averages when the run started: a hint of competing work. */
  loadAverageAtStart: number[]
}

export interface BenchReport {
  format: 'gatehouse-bench/1'
  startedAt: string
  finishedAt: string
  command: string
  options: BenchOptions
  machine: MachineInfo
  scenarios: ScenarioResult[]
}

export function median(values: readonly number[]): number {
  if (values.length === 0) return Number.NaN
  const sorted = [...values].sort((a, b) => a - b)
  const mid = Math.floor(sorted.length / 2)
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2
}

export function summarize(runs: readonly RunSample[]): SideSummary {
  const socketErrors: SocketErrors = { connect: 0, read: 0, write: 0, timeout: 0 }
  for (const r of runs) {
    for (const k of Object.keys(socketErrors) as (keyof SocketErrors)[])
      socketErrors[k] += r.wrk.socketErrors[k]
  }
  return {
    requestsPerSecond: median(runs.map((r) => r.wrk.requestsPerSecond)),
    p50Ms: median(runs.map((r) => r.wrk.latencyMs.p50)),
    p99Ms: median(runs.map((r) => r.wrk.latencyMs.p99)),
    non2xx3xx: runs.reduce((n, r) => n + r.wrk.non2xx3xx, 0),
    socketErrors,
    peakRssMB: Math.max(0, ...runs.map((r) => r.peakRssBytes)) / (1024 * 1024),
    cpuUsRoot: median(runs.flatMap((r) => (r.cpuUsPerRequest ? [r.cpuUsPerRequest.root] : []))),
    cpuUsOthers: median(runs.flatMap((r) => (r.cpuUsPerRequest ? [r.cpuUsPerRequest.others] : []))),
    cpuUsBackend: median(
      runs.flatMap((r) => (r.cpuUsPerRequest?.backend !== undefined ? [r.cpuUsPerRequest.backend] : [])),
    ),
  }
}

const fmtInt = (n: number) => (Number.isFinite(n) ? Math.round(n).toLocaleString('en-US') : '-')
const fmtUs = (n: number) => (Number.isFinite(n) ? n.toFixed(1) : '-')
const fmtMs = (n: number) => (Number.isFinite(n) ? (n < 10 ? n.toFixed(2) : n.toFixed(1)) : '-')

function socketErrorText(e: SocketErrors): string {
  const total = totalSocketErrors(e)
  if (total === 0) return '0'
  const parts = (Object.keys(e) as (keyof SocketErrors)[]).filter((k) => e[k] > 0).map((k) => `${k} ${e[k]}`)
  return `${total} (${parts.join(', ')})`
}

/**
 * A Markdown table with padded, aligned columns, laid out the way Prettier and Biome lay
 * out Markdown tables, so an appended section needs no reformatting.
 */
export function alignedTable(
  header: readonly string[],
  right: readonly boolean[],
  rows: readonly string[][],
): string {
  rows = rows.map((r) => r.map((cell) => cell.trim()))
  const widths = header.map((h, i) => Math.max(3, h.length, ...rows.map((r) => (r[i] ?? '').length)))
  const line = (cells: readonly string[]) =>
    `| ${widths.map((w, i) => (right[i] ? (cells[i] ?? '').padStart(w) : (cells[i] ?? '').padEnd(w))).join(' | ')} |`
  const rule = `| ${widths.map((w, i) => (right[i] ? `${'-'.repeat(w - 1)}:` : '-'.repeat(w))).join(' | ')} |`
  return [line(header), rule, ...rows.map(line)].join('\n')
}

/** The results as a Markdown table: two rows per scenario, Gatehouse first. */
export function markdownTable(scenarios: readonly ScenarioResult[]): string {
  const header = [
    'scenario',
    'server',
    'req/s (median)',
    'Gatehouse/peer',
    'p50 ms',
    'p99 ms',
    'non-2xx',
    'socket errors',
    'peak RSS MB',
    'CPU µs/req main',
    'CPU µs/req workers',
    'CPU µs/req backend',
  ]
  const right = header.map((_, i) => i >= 2)
  const rows: string[][] = []
  for (const s of scenarios) {
    if (s.status !== 'ok' || !s.gatehouse || !s.peer) {
      const reason = (s.reason ?? '').split('\n')[0]!.replace(/\|/g, '\\|')
      rows.push([s.name, `${s.status}: ${reason}`])
      continue
    }
    for (const side of [s.gatehouse, s.peer]) {
      const m = side.summary
      rows.push([
        s.name,
        side.server,
        fmtInt(m.requestsPerSecond),
        side === s.gatehouse && s.ratio !== undefined ? s.ratio.toFixed(2) : '',
        fmtMs(m.p50Ms),
        fmtMs(m.p99Ms),
        fmtInt(m.non2xx3xx),
        socketErrorText(m.socketErrors),
        m.peakRssMB.toFixed(1),
        fmtUs(m.cpuUsRoot),
        fmtUs(m.cpuUsOthers),
        fmtUs(m.cpuUsBackend),
      ])
    }
  }
  return alignedTable(header, right, rows)
}

/** A dated section for docs/benchmarks.md. `resultsLink` is relative to docs/. */
export function markdownSection(report: BenchReport, resultsLink: string | undefined): string {
  const m = report.machine
  const o = report.options
  const when = report.startedAt.replace('T', ' ').replace(/\.\d+Z$/, ' UTC')
  const names = report.scenarios.map((s) => s.name).join(', ')
  const details = [
    `\`${report.command}\``,
    `commit ${m.commit}`,
    `${m.cpus} × ${m.cpuModel}`,
    `Linux ${m.kernel}`,
    `Node ${m.node}`,
    m.wrk,
    m.nginx,
    `load average at start ${m.loadAverageAtStart.map((l) => l.toFixed(2)).join(' ')}`,
  ]
  const notes: string[] = []
  for (const s of report.scenarios) {
    if (s.preflight && !s.preflight.bodiesEqual) {
      notes.push(
        `- ${s.name}: the two sides answered different bodies (${s.preflight.gatehouse.bodyBytes} vs ${s.preflight.peer.bodyBytes} bytes).`,
      )
    }
    for (const side of [s.gatehouse, s.peer]) {
      if (side?.output)
        notes.push(`- ${s.name}: ${side.server} wrote: \`${side.output.split('\n')[0]!.slice(0, 200)}\``)
    }
  }
  return [
    `### ${when} — ${names}`,
    '',
    details.filter((d) => d.trim() !== '').join(' · '),
    '',
    `wrk -t${o.threads} -c${o.connections} -d${o.durationSeconds}s, ${o.repeat} repetition${o.repeat === 1 ? '' : 's'} per side` +
      (o.warmupSeconds > 0 ? ` after a ${o.warmupSeconds}s warm-up` : '') +
      (resultsLink ? `; raw results: [${resultsLink.replace(/^.*\//, '')}](${resultsLink})` : ''),
    '',
    markdownTable(report.scenarios),
    ...(notes.length > 0 ? ['', ...notes] : []),
    '',
  ].join('\n')
}
