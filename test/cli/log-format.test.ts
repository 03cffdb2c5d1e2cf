/*
 * --log-format auto|text|json (log.format): text a person reads, JSON lines for programs, and
 * auto choosing text only on a terminal. The listening line names a URL to click.
 */
import assert from 'node:assert/strict'
import { type ChildProcess, spawn, spawnSync } from 'node:child_process'
import { readFileSync, renameSync, writeFileSync } from 'node:fs'
import { request } from 'node:http'
import { join } from 'node:path'
import { test } from 'node:test'
import { CLI, eventually, PYTHON, stopServe, tempDir } from '../support/helpers.js'

/** `HH:MM:SS.mmm LEVEL message`: the head of a text line. */
const TEXT_LINE = /^\d\d:\d\d:\d\d\.\d{3} (TRACE|DEBUG|INFO |WARN |ERROR|FATAL) \S/

function isJson(line: string): boolean {
  try {
    JSON.parse(line)
    return true
  } catch {
    return false
  }
}

/** `gatehouse serve ARGS` with stderr piped; its stderr so far, and its exit. */
function start(
  t: { after: (fn: () => Promise<void>) => void },
  args: string[],
  cwd: string,
): { child: ChildProcess; stderr: () => string; exited: Promise<number | null> } {
  const child = spawn(process.execPath, [CLI, 'serve', ...args], { cwd, stdio: ['ignore', 'pipe', 'pipe'] })
  let stderr = ''
  child.stderr!.setEncoding('utf8')
  child.stderr!.on('data', (d: string) => (stderr += d))
  const exited = new Promise<number | null>((resolve) => child.on('exit', resolve))
  t.after(() => stopServe(child))
  return { child, stderr: () => stderr, exited }
}

function get(port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request(
      { host: '127.0.0.1', port, path: '/hello.txt', headers: { connection: 'close' } },
      (res) => {
        res.resume()
        res.on('end', () => resolve(res.statusCode!))
      },
    )
    req.on('error', reject)
    req.end()
  })
}

function staticDir(t: { after: (fn: () => void) => void }): string {
  const dir = tempDir(t, 'gh-logfmt-')
  writeFileSync(join(dir, 'hello.txt'), 'hello\n')
  return dir
}

const lines = (s: string) => s.split(/\r?\n/).filter((l) => l.length > 0)

test('--log-format text: time, level, message and key=value; the listening line is a URL that answers', async (t) => {
  const dir = staticDir(t)
  const served = start(t, ['--listen', '0.0.0.0:0', '--static', dir, '--log-format', 'text'], dir)
  const m = await eventually(
    () =>
      /listening on http:\/\/127\.0\.0\.1:(\d+) listen=0\.0\.0\.0:(\d+)/.exec(served.stderr()) ?? undefined,
    `the listening line:\n${served.stderr()}`,
  )
  assert.equal(m[1], m[2])
  assert.equal(await get(Number(m[1])), 200)
  served.child.kill('SIGTERM')
  assert.equal(await served.exited, 0)
  const out = lines(served.stderr())
  assert.ok(out.length >= 2, served.stderr())
  for (const line of out) {
    assert.ok(!isJson(line), `a JSON line: ${line}`)
    assert.match(line, TEXT_LINE)
  }
  // A pipe is no terminal: no colour.
  assert.ok(!served.stderr().includes('\x1b'), served.stderr())
  const stop = out.find((l) => l.includes('shutting down gracefully'))
  assert.ok(stop, served.stderr())
  assert.match(stop, /^\S+ INFO {2}shutting down gracefully signal=SIGTERM grace_ms=\d+$/)
})

test('--log-format text: a Python traceback is several readable lines, once, under its line', async (t) => {
  const dir = tempDir(t, 'gh-logfmt-')
  const served = start(
    t,
    [
      '--listen',
      '127.0.0.1:0',
      '--wsgi',
      'nope:app',
      '--python',
      PYTHON,
      '--workers',
      '2',
      '--log-format',
      'text',
    ],
    dir,
  )
  assert.equal(await served.exited, 1)
  const text = served.stderr()
  const out = lines(text)
  // Nothing escaped: no \n or \" of a JSON string.
  assert.ok(!text.includes('\\n') && !text.includes('\\"'), text)
  assert.ok(
    out.every((l) => !isJson(l)),
    text,
  )
  const tb = out.findIndex((l) => l.includes('Traceback (most recent call last):'))
  assert.ok(tb > 0, text)
  assert.equal(out.filter((l) => l.includes('Traceback (most recent call last):')).length, 1, text)
  assert.match(out[tb]!, /^\s+Traceback \(most recent call last\):$/)
  // The record's line comes first (level, message, key=value), then `traceback:` and the lines.
  assert.match(out[tb - 1]!, /^\s+traceback:$/)
  assert.match(out[tb - 2]!, TEXT_LINE)
  assert.match(out[tb - 2]!, / ERROR cannot load the WSGI application nope:app: .* pool=wsgi worker=\d+$/)
  const rest = out.slice(tb + 1)
  const end = rest.findIndex((l) => !/^\s/.test(l))
  const body = rest.slice(0, end)
  assert.ok(body.length >= 3, text)
  assert.ok(
    body.some((l) => /^\s+File ".*", line \d+, in /.test(l)),
    text,
  )
  assert.match(body.at(-1)!, /^\s+ModuleNotFoundError: No module named 'nope'$/)
  assert.match(out.at(-1)!, /^gatehouse: worker pool cannot start its workers/)
})

test('--log-format json: JSON lines; the listening line keeps listen and msg and adds url', async (t) => {
  const dir = staticDir(t)
  const served = start(t, ['--listen', '127.0.0.1:0', '--static', dir, '--log-format', 'json'], dir)
  const m = await eventually(
    () =>
      /"url":"http:\/\/127\.0\.0\.1:(\d+)","listen":"127\.0\.0\.1:(\d+)","msg":"listening"/.exec(
        served.stderr(),
      ) ?? undefined,
    'the listening line',
  )
  assert.equal(m[1], m[2])
  await stopServe(served.child)
  for (const line of lines(served.stderr())) {
    const record = JSON.parse(line) as Record<string, unknown>
    assert.equal(typeof record.level, 'number')
    assert.equal(typeof record.msg, 'string')
  }
})

test('auto (the default) with stderr piped: JSON lines, the traceback one escaped JSON string', async (t) => {
  const dir = tempDir(t, 'gh-logfmt-')
  const served = start(
    t,
    ['--listen', '127.0.0.1:0', '--wsgi', 'nope:app', '--python', PYTHON, '--workers', '1'],
    dir,
  )
  assert.equal(await served.exited, 1)
  const out = lines(served.stderr())
  const json = out.slice(0, -1)
  assert.ok(json.length > 0 && json.every(isJson), served.stderr())
  const failed = json.map((l) => JSON.parse(l) as Record<string, unknown>).find((r) => r.traceback)
  assert.match(
    String(failed?.traceback),
    /^Traceback \(most recent call last\):\n[\s\S]*No module named 'nope'$/,
  )
})

test('log.format = "text" in the config file; SIGUSR1 reopens a text error_log file', async (t) => {
  const dir = staticDir(t)
  const log = join(dir, 'error.log')
  writeFileSync(
    join(dir, 'gatehouse.toml'),
    `listen = ["127.0.0.1:0"]\n[log]\nformat = "text"\nerror_log = "error.log"\n[[routes]]\npath = "/"\nstatic = { root = "." }\n`,
  )
  const served = start(t, ['--config', 'gatehouse.toml'], dir)
  await eventually(() => {
    try {
      return /listening on http:\/\/127\.0\.0\.1:\d+\n/.test(readFileSync(log, 'utf8'))
    } catch {
      return false
    }
  }, 'the listening line in error.log')
  renameSync(log, `${log}.1`)
  served.child.kill('SIGUSR1')
  // SIGHUP with a config file logs a line: it must land in the new file.
  await new Promise((r) => setTimeout(r, 200))
  served.child.kill('SIGHUP')
  const fresh = await eventually(() => {
    try {
      const s = readFileSync(log, 'utf8')
      return s.includes('configuration reloaded') && s
    } catch {
      return false
    }
  }, 'a line in the reopened error.log')
  for (const line of lines(fresh)) assert.match(line, TEXT_LINE)
  assert.match(fresh, / INFO {2}configuration reloaded config=\S+gatehouse\.toml\n/)
  await stopServe(served.child)
})

const hasScript = spawnSync('script', ['--version'], { encoding: 'utf8' }).status === 0

/** `gatehouse serve ARGS` on a terminal (util-linux script gives it a pty): what it printed. */
function onTerminal(
  args: string[],
  cwd: string,
  env: NodeJS.ProcessEnv,
): { code: number | null; out: string } {
  const command = [process.execPath, CLI, 'serve', ...args]
    .map((a) => `'${a.replace(/'/g, `'\\''`)}'`)
    .join(' ')
  const r = spawnSync('script', ['-qec', command, '/dev/null'], {
    cwd,
    env,
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
    timeout: 30_000,
  })
  return { code: r.status, out: r.stdout.replace(/\r\n/g, '\n') }
}

test(
  'auto on a terminal: coloured text, the traceback as lines; NO_COLOR: no colour',
  { skip: hasScript ? false : 'util-linux script (for a pty) is not installed' },
  (t) => {
    const dir = tempDir(t, 'gh-logfmt-')
    const args = ['--listen', '127.0.0.1:0', '--wsgi', 'nope:app', '--python', PYTHON, '--workers', '1']
    const env = { ...process.env }
    delete env.NO_COLOR
    const coloured = onTerminal(args, dir, env)
    assert.equal(coloured.code, 1, coloured.out)
    assert.match(coloured.out, /\x1b\[31mERROR\x1b\[0m cannot load the WSGI application nope:app/)
    assert.match(coloured.out, /\n\s+Traceback \(most recent call last\):\n/)
    assert.ok(
      lines(coloured.out).every((l) => !isJson(l)),
      coloured.out,
    )

    const plain = onTerminal(args, dir, { ...env, NO_COLOR: '1' })
    assert.equal(plain.code, 1, plain.out)
    assert.ok(!plain.out.includes('\x1b'), plain.out)
    assert.match(plain.out, /^\d\d:\d\d:\d\d\.\d{3} ERROR cannot load the WSGI application nope:app/m)
    assert.match(plain.out, /\n\s+Traceback \(most recent call last\):\n/)
  },
)
