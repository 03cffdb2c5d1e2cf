/*
 * Flags for running as a service (issue 17): --pid FILE (gunicorn's --pid) is written once
 * the server listens and removed when it exits; --backlog N (gunicorn's --backlog, nginx's
 * listen backlog=) reaches listen(2), as `ss` shows in the listening socket's Send-Q.
 */
import assert from 'node:assert/strict'
import { execFileSync, spawn } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { test } from 'node:test'
import { CLI, eventually, listeningAddress, stopServe, tempDir } from '../support/helpers.js'

const SS = '/usr/bin/ss'

test('--pid writes the pid once listening and removes it on exit; --backlog is the listen backlog', async (t) => {
  const dir = tempDir(t)
  const pidFile = join(dir, 'run', '..', 'gatehouse.pid')
  const serve = spawn(
    process.execPath,
    [CLI, 'serve', '--listen', '127.0.0.1:0', '--static', dir, '--pid', pidFile, '--backlog', '37'],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  )
  t.after(() => stopServe(serve))
  const { address } = await listeningAddress(serve)
  // Written right after the listening line.
  await eventually(() => existsSync(pidFile), 'the pid file')
  assert.equal(readFileSync(pidFile, 'utf8'), `${serve.pid}\n`)
  if (existsSync(SS)) {
    const port = address.split(':').at(-1)!
    const out = execFileSync(SS, ['-ltnH', `sport = :${port}`], { encoding: 'utf8' })
    // State Recv-Q Send-Q Local Peer: for a listening socket Send-Q is the backlog.
    const sendQ = out.trim().split(/\s+/)[2]
    assert.equal(sendQ, '37', out)
  } else t.diagnostic(`${SS} not found (Debian package iproute2): backlog not checked`)
  const exited = new Promise<number | null>((resolve) => serve.once('exit', (code) => resolve(code)))
  serve.kill('SIGTERM')
  assert.equal(await exited, 0)
  assert.equal(existsSync(pidFile), false, 'the pid file is removed on exit')
})

test('SIGTERM the moment the listening line appears is a graceful stop (exit 0), not death by the signal', async (t) => {
  for (let round = 0; round < 3; round++) {
    const serve = spawn(
      process.execPath,
      [CLI, 'serve', '--listen', '127.0.0.1:0', '--ready-path', '/readyz'],
      {
        stdio: ['ignore', 'ignore', 'pipe'],
      },
    )
    t.after(() => stopServe(serve))
    const exited = new Promise<[number | null, string | null]>((resolve) =>
      serve.once('exit', (code, signal) => resolve([code, signal])),
    )
    await listeningAddress(serve)
    serve.kill('SIGTERM')
    assert.deepEqual(await exited, [0, null], `round ${round}`)
  }
})
