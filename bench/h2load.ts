/*
 * h2load (Debian nghttp2-client), the HTTP/2 counterpart of wrk: run for a duration and its
 * report parsed into wrk's result shape, so the runner and the report treat both alike.
 * h2load prints the mean and max time per request but no percentiles: those stay NaN.
 */
import { runLoadTool, type WrkResult } from './wrk.js'

export const H2LOAD = process.env.GATEHOUSE_BENCH_H2LOAD ?? '/usr/bin/h2load'

export class H2loadParseError extends Error {
  constructor(
    message: string,
    readonly output: string,
  ) {
    super(message)
    this.name = 'H2loadParseError'
  }
}

const UNIT_MS: Record<string, number> = { us: 0.001, ms: 1, s: 1000 }

function required(re: RegExp, output: string, what: string): RegExpExecArray {
  const m = re.exec(output)
  if (!m) throw new H2loadParseError(`no ${what} in h2load output`, output)
  return m
}

/** Parse h2load's summary (nghttp2 1.52: "finished in", "requests:", "status codes:", "time for request:"). */
export function parseH2loadOutput(output: string): WrkResult {
  const finished = required(/^finished in ([\d.]+)(us|ms|s), ([\d.]+) req\/s/m, output, 'finished line')
  const requests = required(
    /^requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout/m,
    output,
    'requests line',
  )
  const codes = required(/^status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx/m, output, 'status codes')
  const time = required(
    /^time for request:\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)/m,
    output,
    'time for request',
  )
  const ms = (v: string, u: string) => Number(v) * (UNIT_MS[u] ?? Number.NaN)
  const done = Number(requests[3])
  return {
    requests: done,
    durationSeconds: ms(finished[1]!, finished[2]!) / 1000,
    requestsPerSecond: Number(finished[3]),
    latencyMs: {
      avg: ms(time[5]!, time[6]!),
      max: ms(time[3]!, time[4]!),
      p50: Number.NaN,
      p75: Number.NaN,
      p90: Number.NaN,
      p99: Number.NaN,
    },
    non2xx3xx: Number(codes[3]) + Number(codes[4]),
    // Failed and errored requests are h2load's socket-level failures.
    socketErrors: {
      connect: 0,
      read: Number(requests[5]) + Number(requests[6]),
      write: 0,
      timeout: Number(requests[7]),
    },
  }
}

export interface H2loadOptions {
  url: string
  threads: number
  connections: number
  /** Concurrent streams per connection (h2load -m). */
  streams: number
  durationSeconds: number
  onSpawn?: (stop: () => void) => void
}

/** Run h2load for `durationSeconds` (-D); killed if it outlives that by 15 s. */
export function runH2load(opts: H2loadOptions): Promise<string> {
  const args = [
    '-t',
    String(opts.threads),
    '-c',
    String(opts.connections),
    '-m',
    String(opts.streams),
    '-D',
    String(opts.durationSeconds),
    opts.url,
  ]
  return runLoadTool('h2load', H2LOAD, args, opts.durationSeconds, opts.onSpawn)
}
