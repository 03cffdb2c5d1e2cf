/*
 * wrk's text report, parsed. wrk 4.x prints the summary lines below; the "Socket errors"
 * and "Non-2xx or 3xx responses" lines appear only when the count is non-zero, so their
 * absence means zero. Latencies are printed with a unit (us, ms, s, m, h) and are
 * normalised here to milliseconds.
 */
import { spawn } from 'node:child_process'

export interface SocketErrors {
  connect: number
  read: number
  write: number
  timeout: number
}

export interface WrkResult {
  requests: number
  durationSeconds: number
  requestsPerSecond: number
  latencyMs: { avg: number; max: number; p50: number; p75: number; p90: number; p99: number }
  /** Responses outside 2xx and 3xx (wrk counts 3xx as success). */
  non2xx3xx: number
  socketErrors: SocketErrors
}

const TIME_UNIT_MS: Record<string, number> = { us: 0.001, ms: 1, s: 1000, m: 60_000, h: 3_600_000 }

export class WrkParseError extends Error {
  constructor(
    message: string,
    readonly output: string,
  ) {
    super(message)
    this.name = 'WrkParseError'
  }
}

function timeMs(value: string, unit: string, output: string): number {
  const factor = TIME_UNIT_MS[unit]
  if (factor === undefined) throw new WrkParseError(`unknown time unit ${JSON.stringify(unit)}`, output)
  return Number(value) * factor
}

function required(re: RegExp, output: string, what: string): RegExpExecArray {
  const m = re.exec(output)
  if (!m) throw new WrkParseError(`no ${what} in wrk output`, output)
  return m
}

/** Parse the report of `wrk --latency`; throws WrkParseError when a required line is missing. */
export function parseWrkOutput(output: string): WrkResult {
  const TIME = String.raw`([\d.]+)(us|ms|s|m|h)`
  const latency = required(
    new RegExp(String.raw`^\s*Latency\s+${TIME}\s+\S+\s+${TIME}`, 'm'),
    output,
    'latency line',
  )
  const percentile = (p: number): number => {
    const m = required(new RegExp(String.raw`^\s*${p}(?:\.0+)?%\s+${TIME}`, 'm'), output, `${p}% latency`)
    return timeMs(m[1]!, m[2]!, output)
  }
  const total = required(/^\s*(\d+) requests in ([\d.]+)(us|ms|s|m|h)/m, output, 'request count')
  const rps = required(/^Requests\/sec:\s+([\d.]+)/m, output, 'Requests/sec')
  const non2xx = /^\s*Non-2xx or 3xx responses:\s+(\d+)/m.exec(output)
  const sock = /^\s*Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/m.exec(output)
  return {
    requests: Number(total[1]),
    durationSeconds: timeMs(total[2]!, total[3]!, output) / 1000,
    requestsPerSecond: Number(rps[1]),
    latencyMs: {
      avg: timeMs(latency[1]!, latency[2]!, output),
      max: timeMs(latency[3]!, latency[4]!, output),
      p50: percentile(50),
      p75: percentile(75),
      p90: percentile(90),
      p99: percentile(99),
    },
    non2xx3xx: non2xx ? Number(non2xx[1]) : 0,
    socketErrors: sock
      ? { connect: Number(sock[1]), read: Number(sock[2]), write: Number(sock[3]), timeout: Number(sock[4]) }
      : { connect: 0, read: 0, write: 0, timeout: 0 },
  }
}

export function totalSocketErrors(e: SocketErrors): number {
  return e.connect + e.read + e.write + e.timeout
}

export interface WrkOptions {
  wrk: string
  url: string
  threads: number
  connections: number
  durationSeconds: number
  /** Called with a function that kills the wrk child, so a Ctrl-C handler can stop it. */
  onSpawn?: (stop: () => void) => void
}

/**
 * Run wrk once and return its raw report. Bounded: wrk is killed if it outlives its own
 * duration by more than 15 s (its default per-request timeout is 2 s).
 */
export function runWrk(opts: WrkOptions): Promise<string> {
  const args = [
    `-t${opts.threads}`,
    `-c${opts.connections}`,
    `-d${opts.durationSeconds}s`,
    '--latency',
    opts.url,
  ]
  return runLoadTool('wrk', opts.wrk, args, opts.durationSeconds, opts.onSpawn)
}

/**
 * Run a load generator (wrk, h2load) to its end and resolve with its stdout; killed if it
 * outlives `durationSeconds` by more than 15 s; a non-zero exit rejects with what it said.
 */
export function runLoadTool(
  name: string,
  file: string,
  args: string[],
  durationSeconds: number,
  onSpawn?: (stop: () => void) => void,
): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.setEncoding('utf8').on('data', (s: string) => {
      stdout += s
    })
    child.stderr.setEncoding('utf8').on('data', (s: string) => {
      stderr += s
    })
    const killer = setTimeout(() => child.kill('SIGKILL'), (durationSeconds + 15) * 1000)
    onSpawn?.(() => child.kill('SIGKILL'))
    child.on('error', (err) => {
      clearTimeout(killer)
      reject(err)
    })
    child.on('close', (code, signal) => {
      clearTimeout(killer)
      if (code === 0) resolve(stdout)
      else {
        const said = (stderr || stdout).trim().slice(0, 500)
        reject(
          new Error(
            `${name} ${args.join(' ')} exited with ${signal ?? `code ${code}`}${said ? `: ${said}` : ''}`,
          ),
        )
      }
    })
  })
}
