/*
 * Health checks for orchestrators (issue 16 item 3): --health-path (liveness) and
 * --ready-path (readiness), and --shutdown-delay: on SIGTERM the readiness check answers
 * 503 while the server still serves every route, so a load balancer stops sending before
 * the listener closes; then the server stops. Over the real CLI.
 */
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { test } from 'node:test'
import { CLI, eventually, listeningAddress, stopServe, tempDir, getOnce } from '../support/helpers.js'

const get = getOnce

test('--health-path and --ready-path answer; SIGTERM with --shutdown-delay: readiness 503 while every route still serves, then the server stops', async (t) => {
  const dir = tempDir(t)
  writeFileSync(join(dir, 'index.html'), 'hello\n')
  const serve = spawn(
    process.execPath,
    [
      CLI,
      'serve',
      '--listen',
      '127.0.0.1:0',
      '--static',
      dir,
      '--health-path',
      '/healthz',
      '--ready-path',
      '/readyz',
      '--shutdown-delay',
      '3s',
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  )
  t.after(() => stopServe(serve))
  const { address, stderr } = await listeningAddress(serve)
  const origin = `http://${address}`
  assert.deepEqual(await get(origin, '/healthz'), { status: 200, body: 'alive\n' })
  assert.deepEqual(await get(origin, '/readyz'), { status: 200, body: 'ready\n' })
  assert.equal((await get(origin, '/index.html')).status, 200)

  const exited = new Promise<number | null>((resolve) => serve.once('exit', (code) => resolve(code)))
  serve.kill('SIGTERM')
  const draining = await eventually(async () => {
    const r = await get(origin, '/readyz')
    return r.status === 503 ? r : false
  }, 'the readiness check to answer 503')
  assert.match(draining.body, /^draining: the server is stopping\n/)
  // Still serving: the listener is open, other routes answer, liveness holds.
  assert.equal((await get(origin, '/index.html')).status, 200)
  assert.equal((await get(origin, '/healthz')).status, 200)
  assert.equal(await exited, 0)
  await assert.rejects(get(origin, '/healthz'), 'the listener is closed after the delay')
  assert.match(stderr(), /readiness checks answer 503; the listeners close after shutdown_delay/)
})

test('a second signal during --shutdown-delay stops at once', async (t) => {
  const serve = spawn(
    process.execPath,
    [CLI, 'serve', '--listen', '127.0.0.1:0', '--ready-path', '/readyz', '--shutdown-delay', '60s'],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  )
  t.after(() => stopServe(serve))
  const { address } = await listeningAddress(serve)
  // Answered: the CLI's signal handlers are in place (they are set once listen() resolves).
  assert.equal((await get(`http://${address}`, '/readyz')).status, 200)
  const exited = new Promise<number | null>((resolve) => serve.once('exit', (code) => resolve(code)))
  serve.kill('SIGTERM')
  await eventually(async () => (await get(`http://${address}`, '/readyz')).status === 503, 'draining')
  serve.kill('SIGTERM')
  assert.equal(await exited, 1, 'the second signal exits without waiting')
})
