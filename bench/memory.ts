/*
 * Resident memory per process kind (issue 13 item 4): Gatehouse's Node front and its
 * Python and PHP workers, next to the peers (nginx, gunicorn, uvicorn, nginx + uWSGI) and a
 * bare node:http server (the floor of any Node front). For each server: VmRSS of every
 * process of its tree shortly after start (idle), one second after a short wrk load, and
 * again after a quiet spell (V8 gives back heap it grew under load once idle for a while).
 *
 *   npm run bench:memory                         # every server
 *   npm run bench:memory -- gatehouse-static nginx-static
 *   npm run bench:memory -- --node-options "--max-semi-space-size=2"   # V8 flags for the Node fronts
 *   npm run bench:memory -- --load 3s --settle 2s --quiet 12s
 *   GATEHOUSE_BENCH_CLI=/other/checkout/dist/src/cli/main.js npm run bench:memory   # another build
 *   GATEHOUSE_STARTUP_HEAP=default npm run bench:memory -- gatehouse-static   # V8's young generation left to grow at start
 *
 * Prints a Markdown table (docs/benchmarks.md, "Memory"). Nothing is recorded.
 */
import { accessSync, constants, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { basename, join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { stringify as toToml } from 'smol-toml'
import { gunicornPeer, nginxUwsgiPeer } from './peers/gunicorn.js'
import { nginxPeer } from './peers/nginx.js'
import { uvicornPeer } from './peers/uvicorn.js'
import {
  CpuMeter,
  freePort,
  processTree,
  type ServerHandle,
  spawnServer,
  stopAll,
  waitForPort,
} from './processes.js'
import { parseWrkOutput, runWrk } from './wrk.js'

const REPO_ROOT = new URL('../../', import.meta.url).pathname
/** The Gatehouse to measure: this build, or another one's main.js (a before/after table). */
const CLI = process.env.GATEHOUSE_BENCH_CLI ?? join(REPO_ROOT, 'dist/src/cli/main.js')
const PYTHON = '/usr/bin/python3'
const PHP_CGI = '/usr/bin/php-cgi'
const WRK = process.env.GATEHOUSE_BENCH_WRK ?? 'wrk'
const WORKERS = 2

const WSGI_HELLO = `def application(environ, start_response):
    start_response('200 OK', [('Content-Type', 'text/plain'), ('Content-Length', '13')])
    return [b'Hello, World!']
`
const ASGI_HELLO = `async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", b"13")]})
    await send({"type": "http.response.body", "body": b"Hello, World!"})
`

interface Options {
  names: string[]
  loadSeconds: number
  settleSeconds: number
  quietSeconds: number
  nodeOptions: string | undefined
}

interface MemoryCase {
  name: string
  description: string
  path: string
  /** A reason it cannot run here, or undefined. */
  unavailable?(): string | undefined
  start(dir: string, port: number, opts: Options): Promise<ServerHandle> | ServerHandle
}

function prepare(dir: string): void {
  mkdirSync(join(dir, 'docroot'), { recursive: true, mode: 0o755 })
  writeFileSync(join(dir, 'docroot', 'file-1k.txt'), 'x'.repeat(1023) + '\n', { mode: 0o644 })
  writeFileSync(join(dir, 'docroot', 'hello.php'), '<?php echo "hello";\n', { mode: 0o644 })
  mkdirSync(join(dir, 'app'), { recursive: true, mode: 0o755 })
  writeFileSync(join(dir, 'app', 'hello.py'), WSGI_HELLO, { mode: 0o644 })
  writeFileSync(join(dir, 'app', 'ahello.py'), ASGI_HELLO, { mode: 0o644 })
}

function nodeEnv(opts: Options): NodeJS.ProcessEnv {
  return opts.nodeOptions ? { ...process.env, NODE_OPTIONS: opts.nodeOptions } : process.env
}

function gatehouseArgs(args: string[]): MemoryCase['start'] {
  return (dir, port, opts) =>
    spawnServer(
      process.execPath,
      [
        CLI,
        'serve',
        '--log-level',
        'warn',
        ...args.map((a) => a.replaceAll('DIR', dir)),
        '--listen',
        `127.0.0.1:${port}`,
      ],
      { cwd: dir, env: nodeEnv(opts) },
    )
}

function gatehouseConfig(routes: (dir: string) => unknown[]): MemoryCase['start'] {
  return (dir, port, opts) => {
    const file = join(dir, 'gatehouse.toml')
    writeFileSync(
      file,
      toToml({ listen: [`127.0.0.1:${port}`], log: { level: 'warn' }, routes: routes(dir) }),
    )
    return spawnServer(process.execPath, [CLI, 'serve', '--config', file], { cwd: dir, env: nodeEnv(opts) })
  }
}

function executable(path: string): string | undefined {
  try {
    accessSync(path, constants.X_OK)
    return undefined
  } catch {
    return `${path} not found`
  }
}

const appDir = (dir: string) => join(dir, 'app')

const CASES: MemoryCase[] = [
  {
    name: 'node-http',
    description: 'a bare node:http server answering hello (the floor of a Node front)',
    path: '/',
    start: (_dir, port, opts) =>
      spawnServer(
        process.execPath,
        ['-e', `require('http').createServer((q, s) => s.end('hello')).listen(${port}, '127.0.0.1')`],
        { env: nodeEnv(opts) },
      ),
  },
  {
    name: 'gatehouse-static',
    description: 'gatehouse serve --static DIR',
    path: '/file-1k.txt',
    start: gatehouseArgs(['--static', 'DIR/docroot']),
  },
  {
    name: 'gatehouse-static-return',
    description: 'a config of static and return routes only',
    path: '/file-1k.txt',
    start: gatehouseConfig((dir) => [
      { exact: '/hello', return: { status: 200, body: 'hello' } },
      { path: '/', static: { root: join(dir, 'docroot') } },
    ]),
  },
  {
    name: 'nginx-static',
    description: 'nginx (master + 1 worker) serving the same directory',
    path: '/file-1k.txt',
    unavailable: nginxPeer({ server: () => '' }).unavailable,
    start: (dir, port) =>
      nginxPeer({ server: (d) => `    location / { root ${join(d, 'docroot')}; }` }).start(dir, port),
  },
  {
    name: 'gatehouse-wsgi',
    description: `gatehouse serve --wsgi hello:application --workers ${WORKERS}`,
    path: '/',
    start: gatehouseArgs([
      '--wsgi',
      'hello:application',
      '--chdir',
      'DIR/app',
      '--python',
      PYTHON,
      '--workers',
      `${WORKERS}`,
    ]),
  },
  {
    name: 'gunicorn',
    description: `gunicorn, ${WORKERS} sync workers, the same app`,
    path: '/',
    start: (dir, port) =>
      gunicornPeer({ appDir, app: 'hello:application', workers: WORKERS }).start(dir, port),
    unavailable: gunicornPeer({ appDir, app: '', workers: 1 }).unavailable,
  },
  {
    name: 'nginx-uwsgi',
    description: `nginx + uWSGI (uwsgi_pass, ${WORKERS} processes), the same app`,
    path: '/',
    start: (dir, port) =>
      nginxUwsgiPeer({ appDir, module: 'hello:application', processes: WORKERS }).start(dir, port),
    unavailable: nginxUwsgiPeer({ appDir, module: '', processes: 1 }).unavailable,
  },
  {
    name: 'gatehouse-asgi',
    description: `gatehouse serve --asgi ahello:app --workers ${WORKERS}`,
    path: '/',
    start: gatehouseArgs([
      '--asgi',
      'ahello:app',
      '--chdir',
      'DIR/app',
      '--python',
      PYTHON,
      '--workers',
      `${WORKERS}`,
    ]),
  },
  {
    name: 'uvicorn',
    description: `uvicorn, ${WORKERS} workers (uvloop, httptools), the same app`,
    path: '/',
    start: (dir, port) => uvicornPeer({ appDir, app: 'ahello:app', workers: WORKERS }).start(dir, port),
    unavailable: uvicornPeer({ appDir, app: '', workers: 1 }).unavailable,
  },
  {
    name: 'gatehouse-php',
    description: `gatehouse serve --php DIR --pm static --max-children ${WORKERS} (its own php-cgi pool)`,
    path: '/hello.php',
    unavailable: () => executable(PHP_CGI),
    start: gatehouseArgs(['--php', 'DIR/docroot', '--pm', 'static', '--max-children', `${WORKERS}`]),
  },
]

/** A process's command line with paths shortened to their last part: `python3 -m gatehouse_worker`. */
function label(pid: number): string {
  try {
    const argv = readFileSync(`/proc/${pid}/cmdline`, 'latin1').split('\0').filter(Boolean)
    const words = argv.slice(0, 3).map((a) => (a.startsWith('/') ? basename(a) : a.slice(0, 24)))
    return words.join(' ')
  } catch {
    return '?'
  }
}

function rssKb(pid: number): number {
  try {
    const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(readFileSync(`/proc/${pid}/status`, 'latin1'))
    return m ? Number(m[1]) : 0
  } catch {
    return 0
  }
}

/** RSS in MB of every process of the tree, by label ("main" for the root), in tree order. */
function sample(handle: ServerHandle): Map<string, number[]> {
  const out = new Map<string, number[]>()
  const roots = [handle.pid, ...(handle.extraPids ?? [])]
  for (const pid of processTree(roots)) {
    const kind = roots.includes(pid) ? `${label(pid)} (main)` : label(pid)
    const list = out.get(kind) ?? []
    list.push(rssKb(pid) / 1024)
    out.set(kind, list)
  }
  return out
}

const mb = (values: readonly number[] | undefined) =>
  values === undefined || values.length === 0
    ? '-'
    : values.length === 1
      ? values[0]!.toFixed(1)
      : `${Math.min(...values).toFixed(1)}-${Math.max(...values).toFixed(1)}`
const total = (s: Map<string, number[]>) => [...s.values()].flat().reduce((a, b) => a + b, 0)

async function measure(c: MemoryCase, opts: Options): Promise<string[]> {
  const dir = mkdtempSync(join(tmpdir(), `gh-memory-${c.name}-`))
  let handle: ServerHandle | undefined
  try {
    prepare(dir)
    const port = await freePort()
    handle = await c.start(dir, port, opts)
    await waitForPort(port, { server: handle, what: c.name, timeoutMs: 30_000 })
    await sleep(opts.settleSeconds * 1000)
    const idle = sample(handle)
    const cpu = new CpuMeter(handle.pid, handle.extraPids ?? [])
    const report = await runWrk({
      wrk: WRK,
      url: `http://127.0.0.1:${port}${c.path}`,
      threads: 1,
      connections: 64,
      durationSeconds: opts.loadSeconds,
    })
    const wrk = parseWrkOutput(report)
    const used = cpu.stop()
    const usPerRequest = ((used.rootSeconds + used.othersSeconds) * 1e6) / Math.max(1, wrk.requests)
    await sleep(1000)
    const loaded = sample(handle)
    await sleep(opts.quietSeconds * 1000)
    const quiet = sample(handle)
    const kinds = [...new Set([...idle.keys(), ...loaded.keys()])]
    const rows = kinds.map(
      (k) =>
        `| ${c.name} | ${k} | ${(loaded.get(k) ?? idle.get(k))!.length} | ${mb(idle.get(k))} | ${mb(loaded.get(k))} | ${mb(quiet.get(k))} | | |`,
    )
    rows.push(
      `| ${c.name} | **total** | | **${total(idle).toFixed(1)}** | **${total(loaded).toFixed(1)}** | **${total(quiet).toFixed(1)}** | ${Math.round(wrk.requestsPerSecond).toLocaleString('en-US')} | ${usPerRequest.toFixed(1)} |`,
    )
    return rows
  } finally {
    await handle?.stop()
    rmSync(dir, { recursive: true, force: true })
  }
}

function parseOptions(argv: readonly string[]): Options {
  const opts: Options = {
    names: [],
    loadSeconds: 3,
    settleSeconds: 2,
    quietSeconds: 12,
    nodeOptions: undefined,
  }
  const secs = (v: string | undefined) => {
    const m = /^(\d+(?:\.\d+)?)s?$/.exec(v ?? '')
    if (!m) throw new Error(`expected seconds (3s), got ${v}`)
    return Number(m[1])
  }
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!
    if (a === '--load') opts.loadSeconds = secs(argv[++i])
    else if (a === '--settle') opts.settleSeconds = secs(argv[++i])
    else if (a === '--quiet') opts.quietSeconds = secs(argv[++i])
    else if (a === '--node-options') opts.nodeOptions = argv[++i]
    else if (a.startsWith('-')) throw new Error(`unknown option ${a}`)
    else opts.names.push(a)
  }
  const unknown = opts.names.filter((n) => !CASES.some((c) => c.name === n))
  if (unknown.length > 0)
    throw new Error(`unknown: ${unknown.join(', ')} (have ${CASES.map((c) => c.name).join(', ')})`)
  return opts
}

async function main(): Promise<void> {
  const opts = parseOptions(process.argv.slice(2))
  const cases = CASES.filter((c) => opts.names.length === 0 || opts.names.includes(c.name))
  process.stdout.write(
    `RSS in MB (VmRSS), each process; idle ${opts.settleSeconds} s after start, 1 s after wrk -t1 -c64 -d${opts.loadSeconds}s, ` +
      `and after ${opts.quietSeconds} s more of quiet${opts.nodeOptions ? `; NODE_OPTIONS=${opts.nodeOptions}` : ''}\n\n` +
      '| server | process | n | idle | after load | quiet again | req/s | CPU µs/req |\n| --- | --- | --: | --: | --: | --: | --: | --: |\n',
  )
  for (const c of cases) {
    const why = c.unavailable?.()
    if (why) {
      process.stdout.write(`| ${c.name} | skipped: ${why} | | | | | | |\n`)
      continue
    }
    try {
      process.stdout.write(`${(await measure(c, opts)).join('\n')}\n`)
    } catch (err) {
      process.stdout.write(`| ${c.name} | failed: ${(err as Error).message.split('\n')[0]} | | | | | | |\n`)
    }
  }
}

for (const signal of ['SIGINT', 'SIGTERM'] as const)
  process.once(signal, () => void stopAll().then(() => process.exit(130)))

await main()
