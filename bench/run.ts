/*
 * `npm run bench -- [SCENARIO...] [--duration 5s] [--repeat 3] [--connections 64]
 * [--threads 1] [--warmup 1s] [--record]`
 *
 * For each scenario: start Gatehouse (the built CLI) and its peer on free loopback ports,
 * check both answer, warm both up, then drive them with wrk in turn, alternating which
 * side goes first each repetition, sampling each server's process-tree RSS meanwhile.
 * Prints a table of medians and writes the raw results to bench/results/tmp/ (ignored by
 * git); with --record, to bench/results/<timestamp>.json with a dated section appended to
 * docs/benchmarks.md (a run the docs cite, so it is committed). Every process started here is stopped on
 * the way out, on error and on Ctrl-C too.
 */
import { spawnSync } from 'node:child_process'
import { appendFileSync, chmodSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { request } from 'node:http'
import { request as tlsRequest } from 'node:https'
import { cpus, hostname, loadavg, release, tmpdir } from 'node:os'
import { join, relative } from 'node:path'
import { fileURLToPath } from 'node:url'
import { Command, InvalidArgumentError, Option } from 'commander'
import { stringify as toToml } from 'smol-toml'
import { parseDuration } from '../src/core/schema/units.js'
import { NGINX } from './peers/nginx.js'
import {
  CpuMeter,
  freePort,
  killAllSync,
  RssSampler,
  type ServerHandle,
  spawnServer,
  stopAll,
  waitForPort,
} from './processes.js'
import {
  type BenchOptions,
  type BenchReport,
  type MachineInfo,
  markdownSection,
  markdownTable,
  type PreflightResult,
  type RunSample,
  type ScenarioResult,
  type SideResult,
  summarize,
} from './report.js'
import type { GatehouseSide, Scenario } from './scenario.js'
import { SCENARIOS } from './scenarios/index.js'
import { parseWrkOutput, runWrk } from './wrk.js'
import { parseH2loadOutput, runH2load } from './h2load.js'
import { benchCertificate, writeBenchCertificate } from './tls.js'

const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url))
const CLI = join(REPO_ROOT, 'dist/src/cli/main.js')
const WRK = process.env.GATEHOUSE_BENCH_WRK ?? 'wrk'
const HOST = '127.0.0.1'

/** Set by the signal handler; checked between steps so a run stops promptly. */
let interrupted = false
/** Kills the wrk that is running now, if any. */
let stopWrk: (() => void) | undefined
const tempDirs = new Set<string>()

class Interrupted extends Error {}

function checkInterrupted(): void {
  if (interrupted) throw new Interrupted('interrupted')
}

function log(line: string): void {
  process.stderr.write(`${line}\n`)
}

// ---- options -------------------------------------------------------------------------

function seconds(min: number) {
  return (value: string): number => {
    const ms = parseDuration(/^\d+(\.\d+)?$/.test(value) ? Number(value) : value)
    if (ms === null || ms % 1000 !== 0 || ms < min * 1000)
      throw new InvalidArgumentError(`a whole number of seconds, at least ${min} (e.g. 5s, 1m)`)
    return ms / 1000
  }
}

function positiveInt(value: string): number {
  const n = Number(value)
  if (!Number.isSafeInteger(n) || n < 1) throw new InvalidArgumentError('a positive integer')
  return n
}

function parseOptions(argv: readonly string[]): BenchOptions & { list: boolean } {
  const program = new Command()
    .name('npm run bench --')
    .description('Benchmark Gatehouse against its peers with wrk (see docs/benchmarks.md)')
    .argument('[scenario...]', `scenarios to run (default all: ${SCENARIOS.map((s) => s.name).join(', ')})`)
    .addOption(
      new Option('-d, --duration <time>', 'wrk duration per run').argParser(seconds(1)).default(5, '5s'),
    )
    .addOption(
      new Option('-r, --repeat <n>', 'repetitions per side (sides alternate)')
        .argParser(positiveInt)
        .default(3),
    )
    .addOption(new Option('-c, --connections <n>', 'wrk connections').argParser(positiveInt).default(64))
    .addOption(new Option('-t, --threads <n>', 'wrk threads').argParser(positiveInt).default(1))
    .addOption(
      new Option('-w, --warmup <time>', 'unrecorded wrk run per side before the first repetition (0 = none)')
        .argParser(seconds(0))
        .default(1, '1s'),
    )
    .option(
      '--record',
      'a run to keep: append a section to docs/benchmarks.md and write its JSON to bench/results/ (committed)',
    )
    .option(
      '--no-append',
      'a scratch run (the default): nothing appended, JSON to bench/results/tmp/ (ignored)',
    )
    .option('-l, --list', 'list the scenarios and exit')
    .showHelpAfterError('(see `npm run bench -- --help`)')
  program.parse([...argv], { from: 'user' })
  const o = program.opts<{
    duration: number
    repeat: number
    connections: number
    threads: number
    warmup: number
    append: boolean
    record?: boolean
    list: boolean
  }>()
  if (o.threads > o.connections) program.error('error: --threads must not exceed --connections')
  const names = program.args
  const unknown = names.filter((n) => !SCENARIOS.some((s) => s.name === n))
  if (unknown.length > 0)
    program.error(
      `error: unknown scenario ${unknown.join(', ')} (known: ${SCENARIOS.map((s) => s.name).join(', ')})`,
    )
  return {
    scenarios: names.length > 0 ? [...new Set(names)] : SCENARIOS.map((s) => s.name),
    durationSeconds: o.duration,
    warmupSeconds: o.warmup,
    repeat: o.repeat,
    connections: o.connections,
    threads: o.threads,
    // Scratch by default so that exploratory runs never land in the repository; --no-append
    // (the old way to ask for a scratch run) still wins over --record.
    append: Boolean(o.record) && o.append,
    list: o.list,
  }
}

// ---- machine -------------------------------------------------------------------------

/** First line a command prints (on stdout or stderr: `nginx -v` uses stderr, `wrk -v` exits 1). */
function firstLine(cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 5000 })
  if (r.error) return `unavailable (${r.error.message})`
  return `${r.stdout ?? ''}${r.stderr ?? ''}`.split('\n')[0]!.trim()
}

function machineInfo(): MachineInfo {
  let commit = firstLine('git', ['-C', REPO_ROOT, 'rev-parse', '--short', 'HEAD'])
  const dirty = firstLine('git', [
    '-C',
    REPO_ROOT,
    'status',
    '--porcelain',
    '--untracked-files=no',
    '--',
    'src',
    'bench',
    ':(exclude)bench/results',
    'package.json',
  ])
  if (dirty !== '') commit += ' (modified)'
  return {
    hostname: hostname(),
    cpus: cpus().length,
    cpuModel: cpus()[0]?.model.trim() ?? 'unknown',
    kernel: release(),
    node: process.version,
    wrk: firstLine(WRK, ['-v']).replace(/\s+Copyright.*$/, ''),
    nginx: firstLine(NGINX, ['-v']).replace(/^nginx version: /, ''),
    commit,
    loadAverageAtStart: loadavg(),
  }
}

// ---- servers -------------------------------------------------------------------------

function startGatehouse(side: GatehouseSide, tmpDir: string, port: number, tls: boolean): ServerHandle {
  const address = `${HOST}:${port}`
  // TLS scenarios: the same certificate as the peer's; HTTP/2 is on by default with TLS.
  const listen = tls ? { address, tls: benchCertificate(tmpDir) } : address
  let args: string[]
  if (side.config) {
    if ('listen' in side.config)
      throw new Error('a scenario must not set listen; the runner chooses the port')
    const config = { ...side.config, listen: [listen], log: { level: 'warn', ...side.config.log } }
    const file = join(tmpDir, 'gatehouse.toml')
    writeFileSync(file, toToml(config), { mode: 0o644 })
    args = ['serve', '--config', file]
  } else {
    args = ['serve', '--log-level', 'warn', ...side.args, '--listen', address]
    if (tls) args.push('--tls-cert', benchCertificate(tmpDir).cert, '--tls-key', benchCertificate(tmpDir).key)
  }
  return spawnServer(process.execPath, [CLI, ...args], { cwd: tmpDir })
}

/** One GET with a fresh connection (so no idle keep-alive socket lingers into the run). */
function fetchOnce(port: number, path: string, tls = false): Promise<PreflightResult & { body: Buffer }> {
  return new Promise((resolve, reject) => {
    const req = (tls ? tlsRequest : request)({
      rejectUnauthorized: false,
      host: HOST,
      port,
      path,
      agent: false,
      headers: { connection: 'close' },
      timeout: 5000,
    })
    req.on('timeout', () => req.destroy(new Error(`no answer from ${HOST}:${port}${path} within 5 s`)))
    req.on('error', reject)
    req.on('response', (res) => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('error', reject)
      res.on('end', () => {
        const body = Buffer.concat(chunks)
        resolve({
          status: res.statusCode ?? 0,
          bodyBytes: body.length,
          contentType: res.headers['content-type'],
          body,
        })
      })
    })
    req.end()
  })
}

// ---- one scenario --------------------------------------------------------------------

interface Side {
  key: 'gatehouse' | 'peer'
  server: string
  handle: ServerHandle
  port: number
  runs: RunSample[]
}

async function wrkRun(
  side: Side,
  scenario: Scenario,
  opts: BenchOptions,
  durationSeconds: number,
  backend?: ServerHandle,
) {
  const url = `${scenario.transport ? 'https' : 'http'}://${HOST}:${side.port}${scenario.path}`
  const sampler = new RssSampler([side.handle.pid, ...(side.handle.extraPids ?? [])])
  const cpu = new CpuMeter(side.handle.pid, side.handle.extraPids)
  const backendCpu = backend ? new CpuMeter(backend.pid, backend.extraPids) : undefined
  const startedAt = new Date().toISOString()
  let raw: string
  let rss: ReturnType<RssSampler['stop']>
  let used: ReturnType<CpuMeter['stop']>
  let backendUsed: ReturnType<CpuMeter['stop']> | undefined
  try {
    const load = {
      url,
      threads: opts.threads,
      connections: opts.connections,
      durationSeconds,
      onSpawn: (kill: () => void) => {
        stopWrk = kill
      },
    }
    // HTTP/2: h2load, 10 streams per connection (as its docs' example, PEERS.md).
    raw =
      scenario.transport === 'h2'
        ? await runH2load({ ...load, streams: 10 })
        : await runWrk({ ...load, wrk: WRK })
  } finally {
    stopWrk = undefined
    rss = sampler.stop()
    used = cpu.stop()
    backendUsed = backendCpu?.stop()
  }
  checkInterrupted()
  const status = side.handle.exitStatus?.()
  if (status !== undefined) throw new Error(`${side.server} exited (${status}) during the run`)
  const wrk = scenario.transport === 'h2' ? parseH2loadOutput(raw) : parseWrkOutput(raw)
  const perRequest = (seconds: number) => (wrk.requests > 0 ? (seconds * 1e6) / wrk.requests : Number.NaN)
  return {
    startedAt,
    raw,
    wrk,
    rss,
    cpuUsPerRequest: {
      root: perRequest(used.rootSeconds),
      others: perRequest(used.othersSeconds),
      ...(backendUsed ? { backend: perRequest(backendUsed.rootSeconds + backendUsed.othersSeconds) } : {}),
    },
  }
}

async function runScenario(scenario: Scenario, opts: BenchOptions): Promise<ScenarioResult> {
  const base = { name: scenario.name, description: scenario.description, path: scenario.path }
  const unavailable = scenario.backend?.unavailable?.() ?? scenario.peer.unavailable?.()
  if (unavailable) return { ...base, status: 'skipped', reason: unavailable }

  const tmpDir = mkdtempSync(join(tmpdir(), `gh-bench-${scenario.name}-`))
  tempDirs.add(tmpDir)
  chmodSync(tmpDir, 0o755)
  const sides: Side[] = []
  let backend: ServerHandle | undefined
  try {
    if (scenario.transport) writeBenchCertificate(tmpDir)
    await scenario.prepare?.(tmpDir)
    if (scenario.backend) backend = await scenario.backend.start(tmpDir)
    const gatehouseSide = await scenario.gatehouse(tmpDir)
    const gatehousePort = await freePort(HOST)
    let peerPort = await freePort(HOST)
    while (peerPort === gatehousePort) peerPort = await freePort(HOST)

    sides.push({
      key: 'gatehouse',
      server: 'gatehouse',
      handle: startGatehouse(gatehouseSide, tmpDir, gatehousePort, scenario.transport !== undefined),
      port: gatehousePort,
      runs: [],
    })
    sides.push({
      key: 'peer',
      server: scenario.peer.name,
      handle: await scenario.peer.start(tmpDir, peerPort),
      port: peerPort,
      runs: [],
    })
    for (const side of sides) await waitForPort(side.port, { server: side.handle, what: side.server })
    checkInterrupted()

    const [g, p] = [sides[0]!, sides[1]!]
    const [gAnswer, pAnswer] = [
      await fetchOnce(g.port, scenario.path, scenario.transport !== undefined),
      await fetchOnce(p.port, scenario.path, scenario.transport !== undefined),
    ]
    for (const [side, answer] of [
      [g, gAnswer],
      [p, pAnswer],
    ] as const) {
      if (answer.status < 200 || answer.status > 299)
        throw new Error(`${side.server} answered ${answer.status} to GET ${scenario.path}; expected 2xx`)
    }
    const preflight = {
      gatehouse: { status: gAnswer.status, bodyBytes: gAnswer.bodyBytes, contentType: gAnswer.contentType },
      peer: { status: pAnswer.status, bodyBytes: pAnswer.bodyBytes, contentType: pAnswer.contentType },
      bodiesEqual: gAnswer.body.equals(pAnswer.body),
    }
    if (!preflight.bodiesEqual)
      log(
        `${scenario.name}: warning: the two sides answer different bodies (${gAnswer.bodyBytes} vs ${pAnswer.bodyBytes} bytes)`,
      )

    if (opts.warmupSeconds > 0) {
      for (const side of sides) {
        log(`${scenario.name}: warm-up ${side.server} ${opts.warmupSeconds}s`)
        await wrkRun(side, scenario, opts, opts.warmupSeconds, backend)
      }
    }
    for (let rep = 0; rep < opts.repeat; rep++) {
      // ABAB... per repetition, first side alternating, so drift in the machine's load
      // does not favour one side.
      const order = rep % 2 === 0 ? [g, p] : [p, g]
      for (const [i, side] of order.entries()) {
        const r = await wrkRun(side, scenario, opts, opts.durationSeconds, backend)
        side.runs.push({
          repetition: rep,
          order: i,
          startedAt: r.startedAt,
          wrk: r.wrk,
          peakRssBytes: r.rss.peakBytes,
          rssSamples: r.rss.samples,
          cpuUsPerRequest: r.cpuUsPerRequest,
          rawOutput: r.raw,
        })
        const errors = r.wrk.non2xx3xx + Object.values(r.wrk.socketErrors).reduce((a, b) => a + b, 0)
        log(
          `${scenario.name}: rep ${rep + 1}/${opts.repeat} ${side.server.padEnd(10)} ` +
            `${Math.round(r.wrk.requestsPerSecond).toString().padStart(7)} req/s  ` +
            `p50 ${r.wrk.latencyMs.p50.toFixed(2)} ms  p99 ${r.wrk.latencyMs.p99.toFixed(2)} ms  ` +
            `rss ${(r.rss.peakBytes / 1048576).toFixed(1)} MB  ` +
            `cpu ${r.cpuUsPerRequest.root.toFixed(1)}+${r.cpuUsPerRequest.others.toFixed(1)} us/req` +
            `${errors > 0 ? `  ERRORS ${errors}` : ''}`,
        )
      }
    }

    const result = (side: Side): SideResult => {
      const output = side.handle.output?.().trim()
      return {
        server: side.server,
        runs: side.runs,
        summary: summarize(side.runs),
        ...(output ? { output } : {}),
      }
    }
    const gatehouse = result(g)
    const peer = result(p)
    return {
      ...base,
      status: 'ok',
      preflight,
      gatehouse,
      peer,
      ratio: gatehouse.summary.requestsPerSecond / peer.summary.requestsPerSecond,
    }
  } catch (err) {
    if (err instanceof Interrupted || interrupted) throw new Interrupted('interrupted')
    const output = [...sides.map((s) => s.handle), ...(backend ? [backend] : [])]
      .map((h) => h.output?.().trim())
      .filter(Boolean)
      .join('\n')
    const reason = `${(err as Error).message}${output ? `\n${output}` : ''}`
    log(`${scenario.name}: failed: ${reason}`)
    return { ...base, status: 'failed', reason }
  } finally {
    await Promise.allSettled(sides.map((s) => s.handle.stop()))
    await backend?.stop()
    rmSync(tmpDir, { recursive: true, force: true })
    tempDirs.delete(tmpDir)
  }
}

// ---- main ----------------------------------------------------------------------------

function timestampForFile(iso: string): string {
  // 2026-01-02T03:04:05.678Z -> 2026-01-02T03-04-05Z (no ':' in file names)
  return iso.replace(/\.\d+Z$/, 'Z').replace(/:/g, '-')
}

const DOCS_HEADER = `# Benchmarks

Method and how to reproduce: see the introduction of this file in the repository.
`

function writeResults(report: BenchOptions, full: BenchReport): { json: string; docs?: string } {
  const resultsDir = join(REPO_ROOT, 'bench', 'results', ...(report.append ? [] : ['tmp']))
  mkdirSync(resultsDir, { recursive: true })
  const json = join(resultsDir, `${timestampForFile(full.startedAt)}.json`)
  writeFileSync(json, `${JSON.stringify(full, null, 2)}\n`)
  if (!report.append) return { json }
  const docsDir = join(REPO_ROOT, 'docs')
  const docs = join(docsDir, 'benchmarks.md')
  mkdirSync(docsDir, { recursive: true })
  if (!existsSync(docs)) writeFileSync(docs, DOCS_HEADER)
  appendFileSync(docs, `\n${markdownSection(full, relative(docsDir, json))}`)
  return { json, docs }
}

async function main(): Promise<number> {
  const options = parseOptions(process.argv.slice(2))
  if (options.list) {
    for (const s of SCENARIOS) process.stdout.write(`${s.name.padEnd(12)} ${s.description}\n`)
    return 0
  }
  const { list: _list, ...opts } = options
  if (!existsSync(CLI)) throw new Error(`${CLI} is missing: run \`npm run build\` (npm run bench does)`)
  const machine = machineInfo()
  if (machine.wrk.startsWith('unavailable'))
    throw new Error(`wrk is not runnable (${machine.wrk}); install the Debian package wrk`)

  const startedAt = new Date().toISOString()
  const selected = opts.scenarios.map((name) => SCENARIOS.find((s) => s.name === name)!)
  const results: ScenarioResult[] = []
  for (const scenario of selected) {
    checkInterrupted()
    log(`${scenario.name}: ${scenario.description} (vs ${scenario.peer.name})`)
    results.push(await runScenario(scenario, opts))
  }
  const report: BenchReport = {
    format: 'gatehouse-bench/1',
    startedAt,
    finishedAt: new Date().toISOString(),
    command: ['npm run bench --', ...process.argv.slice(2)].join(' '),
    options: opts,
    machine,
    scenarios: results,
  }
  process.stdout.write(`\n${markdownTable(results)}\n\n`)
  const written = writeResults(opts, report)
  log(`raw results: ${relative(process.cwd(), written.json)}`)
  if (written.docs) log(`appended to ${relative(process.cwd(), written.docs)}`)
  return results.some((r) => r.status === 'failed') ? 1 : 0
}

function cleanupTempDirs(): void {
  for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true })
}

function onSignal(signal: NodeJS.Signals): void {
  if (interrupted) {
    killAllSync()
    process.exit(130)
  }
  interrupted = true
  log(`\n${signal}: stopping servers and wrk`)
  stopWrk?.()
  stopAll().finally(() => {
    cleanupTempDirs()
    process.exit(signal === 'SIGINT' ? 130 : 143)
  })
}

process.on('SIGINT', onSignal)
process.on('SIGTERM', onSignal)
process.on('SIGHUP', onSignal)
process.on('exit', killAllSync)

main().then(
  async (code) => {
    await stopAll()
    process.exitCode = code
  },
  async (err: unknown) => {
    await stopAll()
    cleanupTempDirs()
    if (!(err instanceof Interrupted)) {
      log(`bench: ${(err as Error).message}`)
      process.exitCode = 1
    }
  },
)
