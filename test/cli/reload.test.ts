/*
 * `gatehouse serve --reload` (issue 17): a real `gatehouse serve` with a plain WSGI app in a
 * temp directory; the app's file is edited and the answer polled until it changes (no timing
 * assertion: the deadlines are generous). A broken edit keeps the old workers serving; the
 * edit that fixes it reloads again. Without --reload an edit changes nothing. The watcher
 * itself (SourceWatcher) is checked on its own for what it leaves out.
 */
import assert from 'node:assert/strict'
import { type ChildProcess, spawn } from 'node:child_process'
import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { describe, test } from 'node:test'
import { globToRegExp, latestReloads, SourceWatcher } from '../../src/cli/reload.js'
import { CLI, eventually, listeningAddress, PYTHON, stopServe, tempDir, getOnce } from '../support/helpers.js'

/** A WSGI app answering `version`. Versions differ in length: a .pyc is trusted on mtime (s) and size. */
function writeApp(dir: string, version: string): void {
  writeFileSync(
    join(dir, 'app.py'),
    [
      'def app(environ, start_response):',
      "    start_response('200 OK', [('Content-Type', 'text/plain')])",
      `    return [b${JSON.stringify(version)}]`,
      '',
    ].join('\n'),
  )
}

/** `gatehouse serve --config gatehouse.toml --reload` in `dir`, stopped after the test. */
async function serveConfig(
  t: { after: (fn: () => Promise<void> | void) => void },
  dir: string,
): Promise<{ child: ChildProcess; port: number; stderr: () => string }> {
  const child = spawn(process.execPath, [CLI, 'serve', '--config', 'gatehouse.toml', '--reload'], {
    cwd: dir,
    stdio: ['ignore', 'ignore', 'pipe'],
  })
  t.after(() => stopServe(child))
  const { address, stderr } = await listeningAddress(child)
  return { child, port: Number(address.slice(address.lastIndexOf(':') + 1)), stderr }
}

async function serve(
  t: { after: (fn: () => Promise<void> | void) => void },
  dir: string,
  extra: string[],
): Promise<{ child: ChildProcess; port: number; stderr: () => string }> {
  const child = spawn(
    process.execPath,
    [
      CLI,
      'serve',
      '--listen',
      '127.0.0.1:0',
      '--wsgi',
      'app:app',
      '--python',
      PYTHON,
      '--workers',
      '2',
      ...extra,
    ],
    { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] },
  )
  t.after(() => stopServe(child))
  const { address, stderr } = await listeningAddress(child)
  return { child, port: Number(address.slice(address.lastIndexOf(':') + 1)), stderr }
}

const get = getOnce

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

describe('gatehouse serve --reload', () => {
  test('an edit reloads the workers; a broken edit keeps the old ones serving; the fix reloads', async (t) => {
    const dir = tempDir(t, 'gh-reload-')
    writeApp(dir, 'v1')
    const { port, stderr } = await serve(t, dir, ['--reload'])
    assert.deepEqual(await get(port), { status: 200, body: 'v1' })

    writeApp(dir, 'version-2')
    await eventually(async () => (await get(port)).body === 'version-2', 'the edited app to serve', 30_000)
    assert.match(stderr(), /detected changes in 'app\.py'\. Reloading\.\.\./)

    // The edit no longer imports: the new workers cannot start, the old ones keep serving.
    writeFileSync(join(dir, 'app.py'), 'def app(environ, start_response:\n')
    await eventually(() => /reload failed/.test(stderr()), 'the failed reload to be logged', 30_000).catch(
      (err: Error) => {
        throw new Error(`${err.message}:\n${stderr()}`)
      },
    )
    assert.match(stderr(), /SyntaxError/)
    for (let i = 0; i < 4; i++) assert.deepEqual(await get(port), { status: 200, body: 'version-2' })

    writeApp(dir, 'v3-fixed!')
    await eventually(async () => (await get(port)).body === 'v3-fixed!', 'the fixed app to serve', 30_000)
    // Both workers are of the new generation: every answer is the new one.
    for (let i = 0; i < 4; i++) assert.deepEqual(await get(port), { status: 200, body: 'v3-fixed!' })
  })

  test('without --reload an edit changes nothing', async (t) => {
    const dir = tempDir(t, 'gh-reload-')
    writeApp(dir, 'v1')
    const { port, stderr } = await serve(t, dir, [])
    assert.equal((await get(port)).body, 'v1')
    writeApp(dir, 'version-2')
    // Well past the debounce and a worker's start.
    await sleep(3000)
    for (let i = 0; i < 4; i++) assert.deepEqual(await get(port), { status: 200, body: 'v1' })
    assert.doesNotMatch(stderr(), /detected changes|reloading/i)
  })

  test('--reload-dir and --reload-include: a matching file in another directory reloads', async (t) => {
    const dir = tempDir(t, 'gh-reload-')
    const other = tempDir(t, 'gh-reload-other-')
    writeApp(dir, 'v1')
    writeFileSync(join(other, 'settings.toml'), 'a = 1\n')
    const { port, stderr } = await serve(t, dir, [
      '--reload',
      '--reload-dir',
      other,
      '--reload-include',
      '*.toml',
      '--reload-include',
      '*.py',
    ])
    assert.equal((await get(port)).body, 'v1')
    writeApp(dir, 'version-2')
    writeFileSync(join(other, 'settings.toml'), 'a = 2\n')
    await eventually(() => /settings\.toml/.test(stderr()), 'the change in --reload-dir to be logged', 30_000)
    await eventually(async () => (await get(port)).body === 'version-2', 'the edited app to serve', 30_000)
  })

  test('an asgi route of a config file: --config FILE --reload watches its chdir', async (t) => {
    const dir = tempDir(t, 'gh-reload-')
    const app = (version: string) =>
      writeFileSync(
        join(dir, 'main.py'),
        [
          'async def app(scope, receive, send):',
          "    if scope['type'] != 'http':",
          '        return',
          "    await send({'type': 'http.response.start', 'status': 200, 'headers': []})",
          `    await send({'type': 'http.response.body', 'body': b${JSON.stringify(version)}})`,
          '',
        ].join('\n'),
      )
    app('asgi-1')
    writeFileSync(
      join(dir, 'gatehouse.toml'),
      `listen = ["127.0.0.1:0"]\n[[routes]]\npath = "/"\n[routes.asgi]\napp = "main:app"\npython = "${PYTHON}"\nworkers = 1\n`,
    )
    const { port, stderr } = await serveConfig(t, dir)
    assert.equal((await get(port)).body, 'asgi-1')
    app('asgi-two')
    await eventually(
      async () => (await get(port)).body === 'asgi-two',
      'the edited asgi app to serve',
      30_000,
    )
    assert.match(stderr(), /detected changes in 'main\.py'\. Reloading\.\.\./)
  })

  test('a SIGHUP that moves the chdir moves the watch', async (t) => {
    const dir = tempDir(t, 'gh-reload-')
    const a = join(dir, 'a')
    const b = join(dir, 'b')
    mkdirSync(a)
    mkdirSync(b)
    writeApp(a, 'from-a')
    writeApp(b, 'from-b')
    const config = (chdir: string) =>
      writeFileSync(
        join(dir, 'gatehouse.toml'),
        `listen = ["127.0.0.1:0"]\n[[routes]]\npath = "/"\n[routes.wsgi]\napp = "app:app"\npython = "${PYTHON}"\nworkers = 1\nchdir = "${chdir}"\n`,
      )
    config(a)
    const { child, port, stderr } = await serveConfig(t, dir)
    assert.equal((await get(port)).body, 'from-a')
    config(b)
    child.kill('SIGHUP')
    await eventually(async () => (await get(port)).body === 'from-b', 'the route from b to serve', 30_000)
    writeApp(b, 'from-b, edited')
    await eventually(
      async () => (await get(port)).body === 'from-b, edited',
      'the edit in b to reload',
      30_000,
    )
    assert.match(stderr(), /detected changes in 'b\/app\.py'/)
  })

  test('--reload-dir without --reload is a usage error', async (t) => {
    const dir = tempDir(t, 'gh-reload-')
    const child = spawn(process.execPath, [CLI, 'serve', '--wsgi', 'app:app', '--reload-dir', dir], {
      cwd: dir,
      stdio: ['ignore', 'ignore', 'pipe'],
    })
    let err = ''
    child.stderr!.on('data', (d: Buffer) => (err += d.toString()))
    const code = await new Promise<number | null>((r) => child.on('exit', r))
    assert.equal(code, 2)
    assert.match(err, /--reload-dir and --reload-include go with --reload/)
  })
})

describe('SourceWatcher', () => {
  test('reports *.py changes, debounced, and leaves out dotfiles, __pycache__, editor temp files and other files', async (t) => {
    const dir = tempDir(t, 'gh-watch-')
    mkdirSync(join(dir, 'pkg'))
    mkdirSync(join(dir, '__pycache__'))
    mkdirSync(join(dir, '.git'))
    writeFileSync(join(dir, 'app.py'), 'x = 1\n')
    const batches: string[][] = []
    const watcher = new SourceWatcher({ dirs: [dir], debounceMs: 200, onChange: (f) => batches.push(f) })
    t.after(() => watcher.close())
    await watcher.ready

    for (const name of [
      '__pycache__/app.cpython-311.pyc',
      '__pycache__/x.py',
      '.git/index',
      '.git/x.py',
      '.hidden.py',
      '.app.py.swp',
      'app.py~',
      '#app.py#',
      '4913',
      'notes.txt',
    ])
      writeFileSync(join(dir, name), 'junk\n')
    await sleep(800)
    assert.deepEqual(batches, [], 'nothing ignored is reported')

    // Two files saved together are one batch.
    writeFileSync(join(dir, 'app.py'), 'x = 2\n')
    writeFileSync(join(dir, 'pkg', 'views.py'), 'y = 1\n')
    await eventually(() => batches.length > 0, 'a batch', 10_000)
    await sleep(600)
    assert.equal(batches.length, 1, JSON.stringify(batches))
    assert.deepEqual([...batches[0]!].sort(), [join(dir, 'app.py'), join(dir, 'pkg', 'views.py')])
  })

  test('globToRegExp: * within a segment, ** across, a glob with / matches the relative path', () => {
    assert.ok(globToRegExp('*.py').test('app.py'))
    assert.ok(!globToRegExp('*.py').test('app.pyc'))
    assert.ok(!globToRegExp('*.py').test('pkg/app.py'))
    assert.ok(globToRegExp('templates/**/*.html').test('templates/a/b/x.html'))
    assert.ok(globToRegExp('templates/**/*.html').test('templates/x.html'))
    assert.ok(globToRegExp('app.[ch]').test('app.c'))
    assert.ok(!globToRegExp('app.[!ch]').test('app.c'))
  })

  test('latestReloads: each change reloads at once; only the newest outcome is reported', async () => {
    const reports: string[] = []
    const settle: ((ok: boolean) => void)[] = []
    const reload = latestReloads(
      () =>
        new Promise<void>((resolve, reject) =>
          settle.push((ok) => (ok ? resolve() : reject(new Error('x')))),
        ),
      (o) => reports.push(o.ok ? 'ok' : 'failed'),
    )
    reload()
    reload()
    assert.equal(settle.length, 2, 'the second reload did not wait for the first')
    settle[1]!(false)
    settle[0]!(true)
    await sleep(20)
    assert.deepEqual(reports, ['failed'])
  })
})
