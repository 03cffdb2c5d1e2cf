/*
 * The soak harness (issue 18): `npm run soak -- --requests N --gateway NAME|all`.
 *
 * For each gateway: start `gatehouse serve` (the built CLI) with the bench scenario's
 * configuration (and its backend: php-fpm, uWSGI), warm it up, then drive it with wrk in
 * slices until N requests are done (WebSocket: `ws` clients echoing messages, reconnecting
 * every 100 messages). Before the load (after warm-up, idle), between slices, and after it
 * (idle again), the RSS and open file descriptors of the Node process and of every worker
 * process are read from /proc. The verdict: after warm-up, RSS and fd counts are flat within
 * noise (see `verdict` below). Prints a Markdown table (the one docs/reliability.md records)
 * and writes every snapshot to bench/results/tmp/soak-<time>.json. Not part of `npm test`.
 */
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { request } from 'node:http'
import { cpus, loadavg, tmpdir } from 'node:os'
import { join, relative } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { fileURLToPath } from 'node:url'
import { Command, InvalidArgumentError, Option } from 'commander'
import { stringify as toToml } from 'smol-toml'
import WebSocket from 'ws'
import { killAllSync, type ServerHandle, spawnServer, stopAll, waitForPort, freePort } from '../processes.js'
import type { Scenario } from '../scenario.js'
import { asgiScenarios } from '../scenarios/asgi.js'
import { cgiScenarios } from '../scenarios/cgi.js'
import { phpScenarios } from '../scenarios/php.js'
import { phpPoolScenarios } from '../scenarios/php-pool.js'
import { staticScenarios } from '../scenarios/static.js'
import { uwsgiScenarios } from '../scenarios/uwsgi.js'
import { wsgiScenarios } from '../scenarios/wsgi.js'
import { parseWrkOutput, runWrk, totalSocketErrors } from '../wrk.js'
import { type Snapshot, snapshot, sum } from './sample.js'

const REPO_ROOT = fileURLToPath(new URL('../../../', import.meta.url))
const CLI = join(REPO_ROOT, 'dist/src/cli/main.js')
const WRK = process.env.GATEHOUSE_BENCH_WRK ?? 'wrk'
const HOST = '127.0.0.1'
const PYTHON = '/usr/bin/python3'
const MB = 1024 * 1024

/** A gateway under soak: a bench scenario's Gatehouse side (and backend), or the WebSocket echo. */
interface SoakGateway {
  name: string
  description: string
  scenario: Pick<Scenario, 'path' | 'prepare' | 'gatehouse' | 'backend'>
  /** Drive with `ws` clients instead of wrk. */
  websocket?: boolean
}

const ECHO = `async def app(scope, receive, send):
    if scope["type"] != "websocket":
        return
    await receive()
    await send({"type": "websocket.accept"})
    while True:
        m = await receive()
        if m["type"] == "websocket.disconnect":
            return
        await send({"type": "websocket.send", "text": m.get("text"), "bytes": m.get("bytes")})
`

function scenario(list: readonly Scenario[], name: string): Scenario {
  const s = list.find((x) => x.name === name)
  if (!s) throw new Error(`bench scenario ${name} is missing`)
  return s
}

const GATEWAYS: readonly SoakGateway[] = [
  { name: 'static', description: 'a 1 KB file', scenario: scenario(staticScenarios, 'static') },
  { name: 'cgi', description: 'a /bin/sh CGI script', scenario: scenario(cgiScenarios, 'cgi') },
  {
    name: 'php-pool',
    description: 'hello.php, managed php-cgi pool (4 static workers)',
    scenario: scenario(phpPoolScenarios, 'php-pool-hello'),
  },
  {
    name: 'php-fpm',
    description: 'hello.php through the FastCGI client to php-fpm (4 workers)',
    scenario: scenario(phpScenarios, 'php-hello'),
  },
  {
    name: 'uwsgi',
    description: 'a Flask route through the uwsgi client to uWSGI (2 processes)',
    scenario: scenario(uwsgiScenarios, 'uwsgi'),
  },
  {
    name: 'wsgi',
    description: 'hello-world WSGI app, 2 workers',
    scenario: scenario(wsgiScenarios, 'wsgi-hello'),
  },
  {
    name: 'asgi',
    description: 'hello-world ASGI app, 2 workers',
    scenario: scenario(asgiScenarios, 'asgi-hello'),
  },
  {
    name: 'websocket',
    description: 'ASGI echo, 2 workers; a message and its echo is one request, a new connection every 100',
    websocket: true,
    scenario: {
      path: '/',
      prepare: (tmpDir) => writeFileSync(join(tmpDir, 'echo.py'), ECHO, { mode: 0o644 }),
      gatehouse: (tmpDir) => ({
        config: {
          routes: [{ path: '/', asgi: { app: 'echo:app', python: PYTHON, chdir: tmpDir, workers: 2 } }],
        },
      }),
    },
  },
]

interface Options {
  requests: number
  gateways: string[]
  connections: number
  sliceSeconds: number
  warmupSeconds: number
  timeLimitSeconds: number
}

function positiveInt(value: string): number {
  const n = Number(value.replace(/_/g, ''))
  if (!Number.isSafeInteger(n) || n < 1) throw new InvalidArgumentError('a positive integer')
  return n
}

function parseOptions(argv: readonly string[]): Options {
  const names = GATEWAYS.map((g) => g.name)
  const program = new Command()
    .name('npm run soak --')
    .description(
      'Soak Gatehouse: N requests per gateway, RSS and fds of Node and every worker (docs/reliability.md)',
    )
    .addOption(
      new Option('-n, --requests <n>', 'requests per gateway').argParser(positiveInt).default(100_000),
    )
    .addOption(
      new Option('-g, --gateway <name...>', `gateways to soak, or all (${names.join(', ')})`).default([
        'all',
      ]),
    )
    .addOption(
      new Option('-c, --connections <n>', 'wrk connections (WebSocket: clients)')
        .argParser(positiveInt)
        .default(32),
    )
    .addOption(
      new Option('--slice <seconds>', 'wrk runs this long between two samples')
        .argParser(positiveInt)
        .default(10),
    )
    .addOption(
      new Option('--warmup <seconds>', 'load before the first sample').argParser(positiveInt).default(10),
    )
    .addOption(
      new Option('--time-limit <seconds>', 'stop a gateway after this long even short of N (0: none)')
        .argParser((v) => (v === '0' ? 0 : positiveInt(v)))
        .default(0),
    )
    .showHelpAfterError('(see `npm run soak -- --help`)')
  program.parse([...argv], { from: 'user' })
  const o = program.opts<{
    requests: number
    gateway: string[]
    connections: number
    slice: number
    warmup: number
    timeLimit: number
  }>()
  const wanted = o.gateway.flatMap((g) => g.split(','))
  const gateways = wanted.includes('all') ? names : [...new Set(wanted)]
  const unknown = gateways.filter((g) => !names.includes(g))
  if (unknown.length > 0)
    program.error(`error: unknown gateway ${unknown.join(', ')} (known: ${names.join(', ')}, all)`)
  return {
    requests: o.requests,
    gateways,
    connections: o.connections,
    sliceSeconds: o.slice,
    warmupSeconds: o.warmup,
    timeLimitSeconds: o.timeLimit,
  }
}

function log(line: string): void {
  process.stderr.write(`${line}\n`)
}

// ---- load --------------------------------------------------------------------------------

interface SliceResult {
  requests: number
  errors: number
}

async function wrkSlice(
  port: number,
  path: string,
  connections: number,
  seconds: number,
): Promise<SliceResult> {
  const raw = await runWrk({
    wrk: WRK,
    url: `http://${HOST}:${port}${path}`,
    threads: 1,
    connections,
    durationSeconds: seconds,
  })
  const r = parseWrkOutput(raw)
  return { requests: r.requests, errors: r.non2xx3xx + totalSocketErrors(r.socketErrors) }
}

/** `clients` WebSockets echo 64-byte messages for `seconds`, each reconnecting every 100 messages. */
async function wsSlice(port: number, clients: number, seconds: number): Promise<SliceResult> {
  const payload = 'x'.repeat(64)
  const end = Date.now() + seconds * 1000
  let requests = 0
  let errors = 0
  const connection = () =>
    new Promise<boolean>((resolve) => {
      const ws = new WebSocket(`ws://${HOST}:${port}/`)
      let sent = 0
      let settled = false
      const done = (more: boolean) => {
        if (settled) return
        settled = true
        resolve(more)
      }
      ws.on('open', () => {
        sent++
        ws.send(payload)
      })
      ws.on('message', (data) => {
        if (String(data) !== payload) errors++
        else requests++
        if (sent < 100 && Date.now() < end) {
          sent++
          ws.send(payload)
        } else ws.close(1000)
      })
      ws.on('close', (code) => {
        if (code !== 1000 && code !== 1005) errors++
        done(Date.now() < end)
      })
      ws.on('error', () => {
        errors++
        ws.terminate()
        done(Date.now() < end)
      })
    })
  await Promise.all(
    Array.from({ length: clients }, async () => {
      while (await connection()) {
        // one connection after another until the slice ends
      }
    }),
  )
  return { requests, errors }
}

// ---- one gateway -------------------------------------------------------------------------

interface GatewayResult {
  name: string
  description: string
  requests: number
  errors: number
  seconds: number
  snapshots: Snapshot[]
  verdict: Verdict
  reason?: string
}

function get(port: number, path: string): Promise<number> {
  return new Promise((resolve) => {
    const req = request({
      host: HOST,
      port,
      path,
      agent: false,
      headers: { connection: 'close' },
      timeout: 5000,
    })
    req.on('timeout', () => req.destroy())
    req.on('error', () => resolve(0))
    req.on('response', (res) => {
      res.resume()
      res.on('end', () => resolve(res.statusCode ?? 0))
    })
    req.end()
  })
}

async function soakGateway(g: SoakGateway, opts: Options): Promise<GatewayResult> {
  const tmpDir = mkdtempSync(join(tmpdir(), `gh-soak-${g.name}-`))
  chmodSync(tmpDir, 0o755)
  let backend: ServerHandle | undefined
  let server: ServerHandle | undefined
  const snapshots: Snapshot[] = []
  let requests = 0
  let errors = 0
  const t0 = performance.now()
  try {
    const unavailable = g.scenario.backend?.unavailable?.()
    if (unavailable) throw new Error(unavailable)
    await g.scenario.prepare?.(tmpDir)
    if (g.scenario.backend) backend = await g.scenario.backend.start(tmpDir)
    const side = await g.scenario.gatehouse(tmpDir)
    if (!side.config) throw new Error('a soak gateway needs a config, not flags')
    const port = await freePort(HOST)
    const file = join(tmpDir, 'gatehouse.toml')
    const config = { ...side.config, listen: [`${HOST}:${port}`], log: { level: 'warn', ...side.config.log } }
    writeFileSync(file, toToml(config), { mode: 0o644 })
    server = spawnServer(process.execPath, [CLI, 'serve', '--config', file], { cwd: tmpDir })
    await waitForPort(port, { server, what: 'gatehouse', timeoutMs: 30_000 })
    if (!g.websocket) {
      const status = await get(port, g.scenario.path)
      if (status !== 200) throw new Error(`GET ${g.scenario.path} answered ${status}; expected 200`)
    }
    const slice = (seconds: number) =>
      g.websocket
        ? wsSlice(port, opts.connections, seconds)
        : wrkSlice(port, g.scenario.path, opts.connections, seconds)
    const take = (phase: Snapshot['phase']) => {
      const s = snapshot(server!.pid, backend?.pid, {
        atMs: Math.round(performance.now() - t0),
        requests,
        phase,
      })
      snapshots.push(s)
      return s
    }
    const idle = () => sleep(2000)

    log(`${g.name}: warm-up ${opts.warmupSeconds}s`)
    const warm = await slice(opts.warmupSeconds)
    errors += warm.errors
    await idle()
    take('before')
    const loadStart = performance.now()
    let rate = warm.requests / opts.warmupSeconds
    while (requests < opts.requests) {
      const elapsed = (performance.now() - loadStart) / 1000
      if (opts.timeLimitSeconds > 0 && elapsed >= opts.timeLimitSeconds) {
        log(`${g.name}: time limit reached after ${requests} requests`)
        break
      }
      const remaining = opts.requests - requests
      const seconds = Math.max(1, Math.min(opts.sliceSeconds, Math.ceil(remaining / Math.max(rate, 1))))
      // The sample is taken half-way through the slice, with wrk's connections open.
      const running = slice(seconds)
      await sleep((seconds * 1000) / 2)
      const s = take('during')
      const r = await running
      requests += r.requests
      errors += r.errors
      rate = r.requests / seconds
      const status = server.exitStatus?.()
      if (status !== undefined) throw new Error(`gatehouse exited (${status})`)
      log(
        `${g.name}: ${requests.toLocaleString('en')} requests, ${Math.round(rate)} req/s, ` +
          `node ${(s.node.rssBytes / MB).toFixed(1)} MB ${s.node.fds} fds, ` +
          `workers ${s.workers.length} ${(sum(s.workers, 'rssBytes') / MB).toFixed(1)} MB ${sum(s.workers, 'fds')} fds` +
          (errors > 0 ? `, ERRORS ${errors}` : ''),
      )
    }
    const seconds = (performance.now() - loadStart) / 1000
    await idle()
    take('after')
    return {
      name: g.name,
      description: g.description,
      requests,
      errors,
      seconds,
      snapshots,
      verdict: verdict(snapshots),
    }
  } catch (err) {
    const output = server?.output?.().trim()
    const reason = `${(err as Error).message}${output ? `\n${output}` : ''}`
    log(`${g.name}: failed: ${reason}`)
    return {
      name: g.name,
      description: g.description,
      requests,
      errors,
      seconds: (performance.now() - t0) / 1000,
      snapshots,
      verdict: { flat: false, notes: ['failed'], figures: undefined },
      reason,
    }
  } finally {
    await server?.stop()
    await backend?.stop()
    rmSync(tmpDir, { recursive: true, force: true })
  }
}

// ---- verdict -----------------------------------------------------------------------------

interface Figures {
  /** Node RSS (MB): first and last third of the samples under load (medians), and idle before/after. */
  nodeRss: { early: number; late: number; before: number; after: number; max: number }
  /** Node open fds idle before and after, and the most seen under load. */
  nodeFds: { before: number; after: number; max: number }
  /** The same summed over the workers (the processes under Node), and their count. */
  workerRss: { early: number; late: number; before: number; after: number; max: number }
  workerFds: { before: number; after: number; max: number }
  workers: { before: number; after: number; replaced: number }
}

interface Verdict {
  flat: boolean
  notes: string[]
  figures: Figures | undefined
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b)
  return s.length === 0 ? 0 : s[Math.floor((s.length - 1) / 2)]!
}

/**
 * RSS is flat when the median of the last third of the samples under load is within
 * max(8 MB, 10%) of the median of the first third (a garbage-collected heap swings by a
 * few MB between two samples; a leak of even 100 bytes a request is 20 MB over 200,000).
 * Fds are flat when, idle after the load, there are no more than idle before it (+2: a
 * log file reopened, a socket in TIME_WAIT on its way out), and the number of workers is
 * the same. With fewer than 3 samples under load there is no verdict.
 */
function verdict(snapshots: readonly Snapshot[]): Verdict {
  const before = snapshots.find((s) => s.phase === 'before')
  const after = snapshots.find((s) => s.phase === 'after')
  const during = snapshots.filter((s) => s.phase === 'during')
  if (!before || !after || during.length < 3)
    return { flat: false, notes: ['too few samples for a verdict (raise --requests)'], figures: undefined }
  const third = Math.max(1, Math.floor(during.length / 3))
  const early = during.slice(0, third)
  const late = during.slice(-third)
  const mb = (b: number) => Math.round((b / MB) * 10) / 10
  const nodeRss = (s: Snapshot) => s.node.rssBytes
  const workerRss = (s: Snapshot) => sum(s.workers, 'rssBytes')
  const seenPids = new Set(snapshots.flatMap((s) => s.workers.map((w) => w.pid)))
  const figures: Figures = {
    nodeRss: {
      early: mb(median(early.map(nodeRss))),
      late: mb(median(late.map(nodeRss))),
      before: mb(nodeRss(before)),
      after: mb(nodeRss(after)),
      max: mb(Math.max(...during.map(nodeRss))),
    },
    nodeFds: {
      before: before.node.fds,
      after: after.node.fds,
      max: Math.max(...during.map((s) => s.node.fds)),
    },
    workerRss: {
      early: mb(median(early.map(workerRss))),
      late: mb(median(late.map(workerRss))),
      before: mb(workerRss(before)),
      after: mb(workerRss(after)),
      max: mb(Math.max(...during.map(workerRss))),
    },
    workerFds: {
      before: sum(before.workers, 'fds'),
      after: sum(after.workers, 'fds'),
      max: Math.max(...during.map((s) => sum(s.workers, 'fds'))),
    },
    workers: {
      before: before.workers.length,
      after: after.workers.length,
      replaced: seenPids.size - before.workers.length,
    },
  }
  const notes: string[] = []
  const grows = (what: string, f: { early: number; late: number }) => {
    const allowed = Math.max(8, f.early * 0.1)
    if (f.late - f.early > allowed)
      notes.push(
        `${what} RSS grew ${(f.late - f.early).toFixed(1)} MB under load (allowed ${allowed.toFixed(1)})`,
      )
  }
  grows('node', figures.nodeRss)
  grows('workers', figures.workerRss)
  if (figures.nodeFds.after > figures.nodeFds.before + 2)
    notes.push(`node fds ${figures.nodeFds.before} -> ${figures.nodeFds.after} idle`)
  if (figures.workerFds.after > figures.workerFds.before + 2)
    notes.push(`worker fds ${figures.workerFds.before} -> ${figures.workerFds.after} idle`)
  if (figures.workers.after !== figures.workers.before)
    notes.push(`workers ${figures.workers.before} -> ${figures.workers.after}`)
  return { flat: notes.length === 0, notes, figures }
}

// ---- report ------------------------------------------------------------------------------

function markdownTable(results: readonly GatewayResult[]): string {
  const rows = [
    '| gateway | requests | req/s | errors | Node RSS MB: idle before → under load (first → last third, max) → idle after | Node fds idle before → max → after | workers | worker RSS MB (sum): before → first → last third → after | worker fds (sum): before → max → after | verdict |',
    '|---|--:|--:|--:|---|---|---|---|---|---|',
  ]
  for (const r of results) {
    const f = r.verdict.figures
    const cells = f
      ? [
          `${f.nodeRss.before} → ${f.nodeRss.early} → ${f.nodeRss.late} (max ${f.nodeRss.max}) → ${f.nodeRss.after}`,
          `${f.nodeFds.before} → ${f.nodeFds.max} → ${f.nodeFds.after}`,
          `${f.workers.before} → ${f.workers.after}${f.workers.replaced > 0 ? ` (${f.workers.replaced} replaced)` : ''}`,
          f.workers.before === 0 && f.workers.after === 0
            ? '—'
            : `${f.workerRss.before} → ${f.workerRss.early} → ${f.workerRss.late} → ${f.workerRss.after}`,
          f.workers.before === 0 && f.workers.after === 0
            ? '—'
            : `${f.workerFds.before} → ${f.workerFds.max} → ${f.workerFds.after}`,
        ]
      : ['—', '—', '—', '—', '—']
    const v = r.reason
      ? `failed: ${r.reason.split('\n')[0]}`
      : r.verdict.flat
        ? 'flat'
        : `NOT FLAT: ${r.verdict.notes.join('; ')}`
    rows.push(
      `| ${r.name} | ${r.requests.toLocaleString('en')} | ${r.seconds > 0 ? Math.round(r.requests / r.seconds) : 0} | ${r.errors} | ${cells.join(' | ')} | ${v} |`,
    )
  }
  return rows.join('\n')
}

async function main(): Promise<number> {
  const opts = parseOptions(process.argv.slice(2))
  const startedAt = new Date().toISOString()
  log(`soak: ${opts.requests.toLocaleString('en')} requests per gateway: ${opts.gateways.join(', ')}`)
  const results: GatewayResult[] = []
  for (const name of opts.gateways) {
    const g = GATEWAYS.find((x) => x.name === name)!
    log(`${g.name}: ${g.description}`)
    results.push(await soakGateway(g, opts))
  }
  const table = markdownTable(results)
  process.stdout.write(`\n${table}\n\n`)
  const dir = join(REPO_ROOT, 'bench', 'results', 'tmp')
  mkdirSync(dir, { recursive: true })
  const file = join(dir, `soak-${startedAt.replace(/\.\d+Z$/, 'Z').replace(/:/g, '-')}.json`)
  const report = {
    format: 'gatehouse-soak/1',
    startedAt,
    finishedAt: new Date().toISOString(),
    command: ['npm run soak --', ...process.argv.slice(2)].join(' '),
    machine: {
      cpus: cpus().length,
      cpuModel: cpus()[0]?.model.trim(),
      node: process.version,
      loadAverage: loadavg(),
    },
    options: opts,
    results,
  }
  writeFileSync(file, `${JSON.stringify(report, null, 2)}\n`)
  log(`snapshots: ${relative(process.cwd(), file)}`)
  return results.every((r) => r.verdict.flat && r.errors === 0) ? 0 : 1
}

let interrupted = false
function onSignal(signal: NodeJS.Signals): void {
  if (interrupted) {
    killAllSync()
    process.exit(130)
  }
  interrupted = true
  log(`\n${signal}: stopping servers`)
  void stopAll().finally(() => process.exit(signal === 'SIGINT' ? 130 : 143))
}
process.on('SIGINT', onSignal)
process.on('SIGTERM', onSignal)
process.on('exit', killAllSync)

main().then(
  async (code) => {
    await stopAll()
    process.exitCode = code
  },
  async (err: unknown) => {
    await stopAll()
    log(`soak: ${(err as Error).message}`)
    process.exitCode = 1
  },
)
