import assert from 'node:assert/strict'
import { type ChildProcess, spawn, spawnSync } from 'node:child_process'
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs'
import { request as httpRequest } from 'node:http'
import { createServer } from 'node:net'
import { join } from 'node:path'
import { describe, test } from 'node:test'
import { CLI, freePort, REPO_ROOT, stopServe, tempDir } from '../support/helpers.js'

function run(args: string[], cwd = REPO_ROOT) {
  const r = spawnSync(process.execPath, [CLI, ...args], { cwd, encoding: 'utf8', timeout: 20_000 })
  return { code: r.status, stdout: r.stdout, stderr: r.stderr }
}

interface Served {
  child: ChildProcess
  address: string
  stderr: () => string
  exited: Promise<number | null>
}

/** Start `gatehouse serve ARGS`; resolves once it logs that it is listening. */
function serve(t: { after: (fn: () => void) => void }, args: string[], cwd = REPO_ROOT): Promise<Served> {
  const child = spawn(process.execPath, [CLI, 'serve', ...args], { cwd, stdio: ['ignore', 'pipe', 'pipe'] })
  let err = ''
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)))
  t.after(() => stopServe(child))
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no listening line:\n${err}`)), 15_000)
    child.stderr!.setEncoding('utf8')
    child.stderr!.on('data', (d: string) => {
      err += d
      const m = /"listen":"([^"]+)","msg":"listening"/.exec(err)
      if (m) {
        clearTimeout(timer)
        resolve({ child, address: m[1]!, stderr: () => err, exited })
      }
    })
    child.on('exit', (code) => {
      clearTimeout(timer)
      reject(new Error(`exited ${code}:\n${err}`))
    })
  })
}

/** Wait until the file exists and its text matches. */
async function waitForFile(path: string, pattern: RegExp): Promise<void> {
  const deadline = Date.now() + 10_000
  while (!(existsSync(path) && pattern.test(readFileSync(path, 'utf8')))) {
    if (Date.now() > deadline) assert.fail(`${path} never matched ${pattern}`)
    await new Promise((r) => setTimeout(r, 50))
  }
}

function get(address: string, path: string, headers: Record<string, string> = {}) {
  const target = address.startsWith('/')
    ? { socketPath: address }
    : { host: '127.0.0.1', port: Number(address.slice(address.lastIndexOf(':') + 1)) }
  return new Promise<{ status: number; headers: Record<string, unknown>; body: string }>(
    (resolve, reject) => {
      const req = httpRequest({ ...target, path, headers: { connection: 'close', ...headers } }, (res) => {
        let body = ''
        res.setEncoding('utf8')
        res.on('data', (d: string) => {
          body += d
        })
        res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body }))
      })
      req.on('error', reject)
      req.end()
    },
  )
}

describe('gatehouse CLI', () => {
  test('--version and --help exit 0', () => {
    const v = run(['--version'])
    assert.equal(v.code, 0)
    assert.match(v.stdout, /^\d+\.\d+\.\d+\n$/)
    const h = run(['serve', '--help'])
    assert.equal(h.code, 0)
    for (const flag of ['--listen', '--config', '--static', '--log-level', '--access-log'])
      assert.ok(h.stdout.includes(flag), flag)
  })

  test('bad usage exits 2', () => {
    assert.equal(run(['serve', '--no-such-flag']).code, 2)
    assert.equal(run(['frobnicate']).code, 2)
    const r = run(['serve', '--log-level', 'loud'])
    assert.equal(r.code, 2)
    assert.match(r.stderr, /Allowed choices are/)
  })

  test('serve with nothing to serve says what it needs and exits 2', (t) => {
    const dir = tempDir(t)
    const r = run(['serve'], dir)
    assert.equal(r.code, 2)
    assert.match(r.stderr, /nothing to serve: give --static/)
  })

  test('check lists every problem with its path and exits 2', (t) => {
    const dir = tempDir(t)
    const file = join(dir, 'broken.toml')
    writeFileSync(
      file,
      [
        'lisen = ["127.0.0.1:8080"]',
        '[limits]',
        'header_timeout = "soon"',
        '[[routes]]',
        'path = "/"',
        'static = { root = "./public" }',
        '[[routes]]',
        'path = "/x"',
        'static = { root = "./missing" }',
        '',
      ].join('\n'),
    )
    mkdirSync(join(dir, 'public'))
    const r = run(['check', '--config', file])
    assert.equal(r.code, 2, r.stderr)
    assert.match(r.stderr, /3 problems in the configuration/)
    assert.match(r.stderr, /\(top level\): unknown key "lisen" \(did you mean "listen"\?\)/)
    assert.match(r.stderr, /limits\.header_timeout: not a duration/)
    assert.match(r.stderr, /routes\[1\]\.static\.root: no such directory/)
  })

  test('check accepts the bundled example config', () => {
    const r = run(['check', '--config', 'examples/gatehouse.toml'])
    assert.equal(r.code, 0, r.stderr)
    assert.match(r.stdout, /gatehouse\.toml: ok \(\d+ routes/)
  })

  test('serve --static: ETag, 304 and Range; SIGTERM exits 0', async (t) => {
    const dir = tempDir(t)
    writeFileSync(join(dir, 'hello.txt'), 'hello, world\n')
    const s = await serve(t, ['--listen', '127.0.0.1:0', '--static', dir])
    const first = await get(s.address, '/hello.txt')
    assert.equal(first.status, 200)
    assert.equal(first.body, 'hello, world\n')
    const etag = first.headers.etag as string
    assert.match(etag, /^"[0-9a-f]+-[0-9a-f]+"$/)
    assert.equal((await get(s.address, '/hello.txt', { 'if-none-match': etag })).status, 304)
    const part = await get(s.address, '/hello.txt', { range: 'bytes=7-11' })
    assert.equal(part.status, 206)
    assert.equal(part.body, 'world')
    assert.equal(part.headers['content-range'], 'bytes 7-11/13')
    s.child.kill('SIGTERM')
    assert.equal(await s.exited, 0)
  })

  test('serve on a Unix socket with a prefix mount and a JSON access log', async (t) => {
    const dir = tempDir(t)
    writeFileSync(join(dir, 'a.txt'), 'A')
    const sock = join(dir, 'gh.sock')
    const s = await serve(t, [
      '--listen',
      `unix:${sock}`,
      '--static',
      `/files=${dir}`,
      '--access-log',
      'stderr',
      '--access-format',
      'json',
    ])
    const r = await get(sock, '/files/a.txt')
    assert.equal(r.status, 200)
    assert.equal(r.body, 'A')
    assert.equal((await get(sock, '/a.txt')).status, 404)
    await new Promise((res) => setTimeout(res, 100))
    assert.match(
      s.stderr(),
      /"method":"GET","uri":"\/files\/a.txt","protocol":"HTTP\/1.1","status":200,"bytes":1/,
    )
    s.child.kill('SIGINT')
    assert.equal(await s.exited, 0)
  })

  test('SIGUSR1 reopens log files (logrotate): new lines go to a new file at the same path', async (t) => {
    const dir = tempDir(t)
    writeFileSync(join(dir, 'a.txt'), 'A')
    const logs = join(dir, 'logs')
    const access = join(logs, 'access.log')
    const s = await serve(t, ['--listen', '127.0.0.1:0', '--static', dir, '--access-log', access])
    assert.equal((await get(s.address, '/a.txt')).status, 200)
    await waitForFile(access, /GET \/a\.txt/)
    renameSync(access, `${access}.1`)
    s.child.kill('SIGUSR1')
    await waitForFile(access, /^$/)
    assert.equal((await get(s.address, '/a.txt?after')).status, 200)
    await waitForFile(access, /GET \/a\.txt\?after/)
    assert.doesNotMatch(readFileSync(`${access}.1`, 'utf8'), /after/)
    s.child.kill('SIGTERM')
    assert.equal(await s.exited, 0)
  })

  test('the combined access log escapes as nginx does: a `\\` at the end of a field is not an escaped quote', async (t) => {
    const dir = tempDir(t)
    writeFileSync(join(dir, 'a.txt'), 'A')
    const access = join(dir, 'access.log')
    const s = await serve(t, ['--listen', '127.0.0.1:0', '--static', dir, '--access-log', access])
    const r = await get(s.address, '/a.txt?q', { 'user-agent': 'a"b\\', referer: 'x\t\u00e9' })
    assert.equal(r.status, 200)
    await waitForFile(access, /a\.txt\?q/)
    const line = readFileSync(access, 'utf8').trimEnd()
    assert.ok(line.includes('"a\\x22b\\x5C"'), line)
    const m =
      /^(\S+) - - \[([^\]]+)\] "((?:[^"\\]|\\x[0-9A-F]{2})*)" (\d{3}) (\d+) "((?:[^"\\]|\\x[0-9A-F]{2})*)" "((?:[^"\\]|\\x[0-9A-F]{2})*)"$/.exec(
        line,
      )
    assert.ok(m, line)
    assert.deepEqual(m.slice(3), ['GET /a.txt?q HTTP/1.1', '200', '1', 'x\\x09\\xE9', 'a\\x22b\\x5C'])
    s.child.kill('SIGTERM')
    assert.equal(await s.exited, 0)
  })

  test('an access log path that cannot be opened is an error at start (exit 1), not a crash later', (t) => {
    const dir = tempDir(t)
    writeFileSync(join(dir, 'file'), '')
    const r = run([
      'serve',
      '--listen',
      '127.0.0.1:0',
      '--static',
      dir,
      '--access-log',
      join(dir, 'file', 'access.log'),
    ])
    assert.equal(r.code, 1)
    assert.equal(
      r.stderr,
      `gatehouse: cannot open the log file: ${join(dir, 'file', 'access.log')}: ${join(dir, 'file')} is not a directory (ENOTDIR)\n`,
    )
  })

  test('an error log under /proc is one line and exit 1, not a recursive mkdir spinning forever', () => {
    const r = run(['serve', '--listen', '127.0.0.1:0', '--static', '.', '--error-log', '/proc/nope/x.log'])
    assert.equal(r.code, 1, r.stderr)
    assert.match(
      r.stderr,
      /^gatehouse: cannot open the log file: \/proc\/nope\/x\.log: cannot create the directory \/proc\/nope: .*\((ENOENT|EACCES|EPERM)\)\n$/,
    )
  })

  test('log directories that do not exist yet are made, one level at a time', (t) => {
    const dir = tempDir(t)
    const log = join(dir, 'a', 'b', 'error.log')
    // Stops at once (no such interpreter) after the logs are open.
    const r = run([
      'serve',
      '--listen',
      '127.0.0.1:0',
      '--wsgi',
      'app:app',
      '--error-log',
      log,
      '--python',
      '/nope',
    ])
    assert.equal(r.code, 1, r.stderr)
    assert.ok(existsSync(log), r.stderr)
  })

  for (const [flag, what, extra] of [
    ['--python', 'the Python interpreter', ['--wsgi', 'app:app']],
    ['--php-cgi', 'php-cgi', ['--php', '.']],
  ] as const) {
    test(`${flag} naming no executable: one line naming it, exit 1`, (t) => {
      const dir = tempDir(t)
      const r = run(['serve', '--listen', '127.0.0.1:0', ...extra, flag, join(dir, 'nope')], dir)
      assert.equal(r.code, 1, r.stderr)
      assert.equal(
        r.stderr,
        `gatehouse: worker pool cannot start its workers: ${what} ${join(dir, 'nope')}: no such file (ENOENT)\n`,
      )
      writeFileSync(join(dir, 'plain'), '#!/bin/sh\n')
      const p = run(['serve', '--listen', '127.0.0.1:0', ...extra, flag, join(dir, 'plain')], dir)
      assert.equal(p.code, 1, p.stderr)
      assert.match(p.stderr, /plain: not executable.*\(EACCES\)\n$/)
    })
  }

  test('a --python that exists but cannot start: the crash loop at start exits 1 (the respawn timer keeps the process up)', (t) => {
    const dir = tempDir(t)
    writeFileSync(join(dir, 'python'), '#!/nonexistent/interpreter\n', { mode: 0o755 })
    const r = run(
      ['serve', '--listen', '127.0.0.1:0', '--wsgi', 'app:app', '--python', join(dir, 'python')],
      dir,
    )
    assert.equal(r.code, 1, r.stderr)
    assert.match(r.stderr, /^gatehouse: worker pool cannot start its workers: .*respawning stopped\n$/m)
  })

  test('a port already in use is a one-line error naming the address, exit 1', async (t) => {
    const dir = tempDir(t)
    const blocker = createServer()
    await new Promise<void>((r) => blocker.listen(0, '127.0.0.1', r))
    t.after(() => blocker.close())
    const port = (blocker.address() as { port: number }).port
    const r = run(['serve', '--listen', `127.0.0.1:${port}`, '--static', dir, '--log-level', 'silent'])
    assert.equal(r.code, 1)
    assert.equal(r.stderr, `gatehouse: cannot listen on 127.0.0.1:${port}: address already in use\n`)
  })

  test('SIGHUP reloads the config; an invalid new file is refused and the old config kept', async (t) => {
    const dir = tempDir(t)
    const port = await freePort()
    const file = join(dir, 'gatehouse.toml')
    const write = (body: string) =>
      writeFileSync(
        file,
        `listen = ["127.0.0.1:${port}"]\n[[routes]]\nexact = "/v"\nreturn = { body = "${body}" }\n`,
      )
    write('one')
    const s = await serve(t, ['--config', file])
    assert.equal((await get(s.address, '/v')).body, 'one')

    write('two')
    s.child.kill('SIGHUP')
    await waitFor(async () => (await get(s.address, '/v')).body === 'two', 10_000, s.stderr)

    writeFileSync(file, `listen = ["127.0.0.1:${port}"]\n[[routes]]\nexact = "/v"\nretrun = {}\n`)
    s.child.kill('SIGHUP')
    await waitFor(async () => s.stderr().includes('reload refused: invalid configuration'))
    assert.match(s.stderr(), /unknown key \\"retrun\\" \(did you mean \\"return\\"\?\)/)
    assert.equal((await get(s.address, '/v')).body, 'two')
    s.child.kill('SIGTERM')
    assert.equal(await s.exited, 0)
  })
})

async function waitFor(
  check: () => Promise<boolean> | boolean,
  timeoutMs = 10_000,
  context?: () => string,
): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline) {
    if (await check()) return
    await new Promise((r) => setTimeout(r, 50))
  }
  assert.fail(`condition not met in time${context ? `:\n${context()}` : ''}`)
}
