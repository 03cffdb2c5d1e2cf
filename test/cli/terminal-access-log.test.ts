/*
 * On a terminal, `gatehouse serve` shows the requests (issue 17: "an access log on a terminal
 * by default in development"); piped (a service, CI) it does not; --access-log off silences it.
 * The terminal is a real pseudo-terminal, from util-linux's `script`.
 */
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { existsSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { test } from 'node:test'
import { CLI, eventually, listeningAddress, stopServe, tempDir } from '../support/helpers.js'

const SCRIPT = '/usr/bin/script'

function onTerminal(t: Parameters<typeof tempDir>[0], args: string[]) {
  // script runs the command on a new pty and copies what it writes to our pipe.
  const command = [process.execPath, CLI, 'serve', ...args].map((a) => `'${a}'`).join(' ')
  const child = spawn(SCRIPT, ['-qfec', command, '/dev/null'], { stdio: ['pipe', 'pipe', 'pipe'] })
  let out = ''
  child.stdout.on('data', (d: Buffer) => (out += d.toString()))
  t.after(() => stopServe(child))
  return { child, out: () => out }
}

test('on a terminal the access log is on by default; --access-log off turns it off; piped it is off', async (t) => {
  if (!existsSync(SCRIPT)) return t.skip(`${SCRIPT} not found (Debian package bsdutils)`)
  const dir = tempDir(t)
  writeFileSync(join(dir, 'a.txt'), 'a')
  for (const [args, logged] of [
    [[], true],
    [['--access-log', 'off'], false],
  ] as const) {
    const { out } = onTerminal(t, ['--listen', '127.0.0.1:0', '--static', dir, ...args])
    await eventually(() => /listening on (http:\/\/\S+)/.test(out()), 'the listening line')
    const url = /listening on (http:\/\/[\d.:]+)/.exec(out())![1]!
    assert.equal(await (await fetch(`${url}/a.txt?from-terminal`)).text(), 'a')
    if (logged)
      await eventually(() => out().includes('"GET /a.txt?from-terminal HTTP/1.1" 200'), 'the access line')
    else {
      // The request is answered; give a line the time to appear (it would come right after).
      await new Promise((r) => setTimeout(r, 500))
      assert.doesNotMatch(out(), /GET \/a\.txt/)
    }
  }
  // Piped: no access log.
  const piped = spawn(process.execPath, [CLI, 'serve', '--listen', '127.0.0.1:0', '--static', dir], {
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  t.after(() => stopServe(piped))
  let stdout = ''
  piped.stdout.on('data', (d: Buffer) => (stdout += d.toString()))
  const { address } = await listeningAddress(piped)
  assert.equal(await (await fetch(`http://${address}/a.txt`)).text(), 'a')
  await new Promise((r) => setTimeout(r, 500))
  assert.equal(stdout, '')
})
