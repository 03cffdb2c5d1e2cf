/*
 * Running under systemd (issue 17): socket activation through systemd's own
 * `systemd-socket-activate` (the sockets it passes replace `listen`), and sd_notify readiness
 * through `systemd-notify` to a NOTIFY_SOCKET. systemd itself is not PID 1 here, so a Python
 * datagram socket stands in for its notify socket and records what it is sent.
 */
import assert from 'node:assert/strict'
import { execFile, spawn } from 'node:child_process'
import { existsSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { test } from 'node:test'
import { CLI, eventually, listeningAddress, stopServe, tempDir } from '../support/helpers.js'

const ACTIVATE = '/usr/bin/systemd-socket-activate'
const NOTIFY = '/usr/bin/systemd-notify'
const PYTHON = '/usr/bin/python3'

function curlUnix(socket: string, path: string): Promise<string> {
  return new Promise((resolve, reject) =>
    execFile(
      'curl',
      ['-sS', '--max-time', '30', '--unix-socket', socket, `http://localhost${path}`],
      (err, out, errOut) => (err ? reject(new Error(`${err.message} ${errOut}`)) : resolve(out)),
    ),
  )
}

test('socket activation: the socket systemd-socket-activate passes is served; listen is ignored', async (t) => {
  if (!existsSync(ACTIVATE)) return t.skip(`${ACTIVATE} not found (Debian package systemd)`)
  const dir = tempDir(t)
  writeFileSync(join(dir, 'hello.txt'), 'hello from an inherited socket\n')
  const socket = join(dir, 'gatehouse.sock')
  const activate = spawn(
    ACTIVATE,
    ['-l', socket, process.execPath, CLI, 'serve', '--listen', '127.0.0.1:0', '--static', dir],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  )
  let log = ''
  activate.stderr.on('data', (d: Buffer) => (log += d.toString()))
  t.after(() => stopServe(activate))
  await eventually(() => existsSync(socket), 'the activation socket')
  // The first connection starts the server (systemd-socket-activate execs it), which then
  // accepts it from the inherited socket.
  assert.equal(await curlUnix(socket, '/hello.txt'), 'hello from an inherited socket\n')
  assert.equal(await curlUnix(socket, '/hello.txt'), 'hello from an inherited socket\n')
  assert.match(log, /socket activation: serving on the sockets systemd passed/)
  assert.match(log, /fd:\/\/3/)
  assert.match(log, /"listen":"fd:\/\/3"/)
  assert.doesNotMatch(log, /"listen":"127\.0\.0\.1/, 'the --listen address was not opened')
})

test('fd://N is refused below 3 and as an upstream', async () => {
  const { parseListenAddress, resolveUpstreamAddress } = await import('../../src/core/address.js')
  assert.deepEqual(parseListenAddress('fd://3'), { kind: 'fd', fd: 3, text: 'fd://3' })
  assert.throws(() => parseListenAddress('fd://1'), /from 3 up/)
  assert.throws(() => resolveUpstreamAddress('fd://3'), /connected to, not inherited/)
})

test('sd_notify: READY=1 once listening, RELOADING=1 then READY=1 around SIGHUP, STOPPING=1 on SIGTERM', async (t) => {
  if (!existsSync(NOTIFY)) return t.skip(`${NOTIFY} not found (Debian package systemd)`)
  const dir = tempDir(t)
  const notifySocket = join(dir, 'notify.sock')
  // The stand-in for systemd's notify socket: one line per datagram, fields joined by '|'.
  const receiver = spawn(
    PYTHON,
    [
      '-c',
      `import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
print("bound", flush=True)
while True:
    data = s.recv(4096)
    print(data.decode().replace("\\n", "|"), flush=True)`,
      notifySocket,
    ],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  )
  t.after(() => receiver.kill('SIGKILL'))
  let messages = ''
  receiver.stdout.on('data', (d: Buffer) => (messages += d.toString()))
  await eventually(() => messages.includes('bound'), 'the notify socket')
  const config = join(dir, 'gatehouse.toml')
  writeFileSync(
    config,
    `listen = ["127.0.0.1:0"]\n[[routes]]\npath = "/"\nreturn = { status = 200, body = "ok" }\n`,
  )
  const serve = spawn(process.execPath, [CLI, 'serve', '--config', config], {
    stdio: ['ignore', 'ignore', 'pipe'],
    env: { ...process.env, NOTIFY_SOCKET: notifySocket },
  })
  t.after(() => stopServe(serve))
  await listeningAddress(serve)
  const lines = () => messages.split('\n').filter((l) => l.includes('='))
  await eventually(() => lines().some((l) => l.includes('READY=1')), 'READY=1')
  const ready = lines().find((l) => l.includes('READY=1'))!
  assert.match(ready, new RegExp(`MAINPID=${serve.pid}`))
  assert.match(ready, /STATUS=serving on http:\/\/127\.0\.0\.1:\d+/)
  serve.kill('SIGHUP')
  await eventually(
    () => lines().filter((l) => l.includes('READY=1')).length === 2,
    'READY=1 after the reload',
  )
  const all = lines()
  const reloading = all.findIndex((l) => l.includes('RELOADING=1'))
  assert.ok(reloading > 0, all.join('\n'))
  assert.match(all[reloading]!, /MONOTONIC_USEC=\d+/)
  assert.ok(
    all.slice(reloading + 1).some((l) => l.includes('READY=1')),
    'READY=1 follows RELOADING=1',
  )
  const exited = new Promise<number | null>((resolve) => serve.once('exit', (code) => resolve(code)))
  serve.kill('SIGTERM')
  assert.equal(await exited, 0)
  await eventually(() => lines().some((l) => l.includes('STOPPING=1')), 'STOPPING=1')
})
