/*
 * `gatehouse serve` loads only what its config uses (issue 13 item 4: a static-only server
 * held 83-95 MB with every gateway imported). Over the real CLI, with a preload module that
 * records every ES module the process loads and, at exit, the CommonJS ones (require.cache).
 */
import assert from 'node:assert/strict'
import { spawn, spawnSync } from 'node:child_process'
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { test } from 'node:test'
import { pathToFileURL } from 'node:url'
import { CLI, eventually, listeningAddress, tempDir, getOnce } from '../support/helpers.js'

/** Loader hooks appending each loaded module's URL to $GH_TEST_MODULES_LOG. */
const HOOKS = `
import { appendFileSync } from 'node:fs'
export async function load(url, context, next) {
  appendFileSync(process.env.GH_TEST_MODULES_LOG, url + '\\n')
  return next(url, context)
}
`
/** Registers the hooks, and writes the CommonJS modules loaded when the process exits. */
const PRELOAD = (hooks: string) => `
import { appendFileSync } from 'node:fs'
import { createRequire, register } from 'node:module'
register(${JSON.stringify(hooks)})
process.on('exit', () => {
  const cache = createRequire(import.meta.url).cache
  appendFileSync(process.env.GH_TEST_MODULES_LOG, Object.keys(cache).join('\\n') + '\\n')
})
`

const get = getOnce

/** Start `gatehouse serve ARGS` with the module log; stop() ends it and returns the modules loaded. */
async function serveRecording(t: { after: (fn: () => void) => void }, dir: string, args: string[]) {
  const hooks = join(dir, 'hooks.mjs')
  const preload = join(dir, 'preload.mjs')
  const log = join(dir, 'modules.log')
  writeFileSync(hooks, HOOKS)
  writeFileSync(preload, PRELOAD(pathToFileURL(hooks).href))
  const child = spawn(process.execPath, ['--import', pathToFileURL(preload).href, CLI, 'serve', ...args], {
    env: { ...process.env, GH_TEST_MODULES_LOG: log },
    stdio: ['ignore', 'ignore', 'pipe'],
  })
  t.after(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
  })
  const { address, stderr } = await listeningAddress(child)
  return {
    child,
    origin: `http://${address}`,
    stderr,
    /** The ES modules loaded so far (the CommonJS ones are written at exit). */
    loaded: () => readFileSync(log, 'utf8').split('\n').filter(Boolean),
    async stop(): Promise<string[]> {
      const exited = new Promise((resolve) => child.once('exit', resolve))
      child.kill('SIGTERM')
      await exited
      return readFileSync(log, 'utf8').split('\n').filter(Boolean)
    },
  }
}

const loadedFrom = (modules: string[], part: string) => modules.some((m) => m.includes(part))

test('serve --static loads the static gateway and no other, nor prom-client, ws, chokidar, acme-client or undici', async (t) => {
  const dir = tempDir(t)
  writeFileSync(join(dir, 'index.html'), 'hello\n')
  const serve = await serveRecording(t, dir, ['--listen', '127.0.0.1:0', '--static', dir])
  assert.deepEqual(await get(serve.origin, '/index.html'), { status: 200, body: 'hello\n' })
  const modules = await serve.stop()
  assert.ok(loadedFrom(modules, '/dist/src/gateways/static/action.js'), 'the static gateway is loaded')
  for (const gateway of ['return', 'status', 'cgi', 'fastcgi', 'php', 'uwsgi', 'python'])
    assert.ok(!loadedFrom(modules, `/dist/src/gateways/${gateway}/`), `the ${gateway} gateway is not loaded`)
  for (const pkg of ['prom-client', 'ws', 'chokidar', 'acme-client', 'undici'])
    assert.ok(!loadedFrom(modules, `/node_modules/${pkg}/`), `${pkg} is not loaded`)
  // No listener speaks HTTP/2, and there is one front (front_processes = 1).
  assert.ok(!loadedFrom(modules, '/dist/src/http/h2.js'), 'the HTTP/2 front is not loaded')
  assert.ok(!loadedFrom(modules, '/dist/src/fronts/'), 'the front threads are not loaded')
})

test('a SIGHUP config that adds a metrics route and uwsgi_listen loads their gateways, which then serve', async (t) => {
  const dir = tempDir(t)
  writeFileSync(join(dir, 'index.html'), 'hello\n')
  const config = join(dir, 'gatehouse.toml')
  const root = JSON.stringify(dir)
  writeFileSync(config, `listen = ["127.0.0.1:0"]\n[[routes]]\npath = "/"\nstatic = { root = ${root} }\n`)
  const serve = await serveRecording(t, dir, ['--config', config])
  // Served once: the SIGHUP handler is in place (it is set once the listeners are open).
  assert.equal((await get(serve.origin, '/index.html')).status, 200)
  assert.ok(!loadedFrom(serve.loaded(), '/dist/src/gateways/status/'), 'no status gateway before the reload')
  assert.ok(!loadedFrom(serve.loaded(), '/dist/src/gateways/uwsgi/'), 'no uwsgi gateway before the reload')
  const socket = join(dir, 'uwsgi.sock')
  writeFileSync(
    config,
    `listen = ["127.0.0.1:0"]\nuwsgi_listen = ["unix:${socket}"]\n` +
      `[[routes]]\nexact = "/metrics"\nmetrics = {}\n[[routes]]\npath = "/"\nstatic = { root = ${root} }\n`,
  )
  serve.child.kill('SIGHUP')
  await eventually(() => serve.stderr().includes('configuration reloaded'), 'the reload')
  assert.ok(existsSync(socket), 'the uwsgi listener is open')
  // The same listen text: the listener stays open through the reload.
  assert.equal((await get(serve.origin, '/index.html')).status, 200)
  const metrics = await get(serve.origin, '/metrics')
  assert.equal(metrics.status, 200)
  assert.match(metrics.body, /gatehouse_http_requests_total\{route="\/",method="GET",status="2xx"\} 1\n/)
  const modules = await serve.stop()
  assert.ok(loadedFrom(modules, '/dist/src/gateways/status/'), 'the status gateway is loaded')
  assert.ok(loadedFrom(modules, '/dist/src/gateways/uwsgi/'), 'the uwsgi gateway is loaded')
  assert.ok(loadedFrom(modules, '/node_modules/prom-client/'), 'prom-client is loaded')
})

test('a config with a problem is checked against every gateway: the hints name actions it did not load', (t) => {
  const dir = tempDir(t)
  const config = join(dir, 'gatehouse.toml')
  writeFileSync(
    config,
    `[[routes]]\npath = "/"\nstatic = { root = ${JSON.stringify(dir)} }\n[[routes]]\npath = "/app"\nwsgii = { app = "x:y" }\n`,
  )
  const r = spawnSync(process.execPath, [CLI, 'check', '--config', config], { encoding: 'utf8' })
  assert.equal(r.status, 2)
  assert.match(r.stderr, /unknown key "wsgii" \(did you mean "wsgi"\?\)/)
  assert.match(
    r.stderr,
    /a route needs one action: static, return, uwsgi, cgi, fastcgi, php, status, metrics, wsgi, asgi/,
  )
})
