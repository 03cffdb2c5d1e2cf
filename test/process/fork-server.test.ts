/**
 * What is particular to starting scripts through the fork server (spawner = "forkserver",
 * the default): the exact environment, no shell anywhere, the pid, stderr tagging, the fork
 * server dying under running scripts, and the two ways around it ("direct", and a missing
 * interpreter).
 */
import assert from 'node:assert/strict'
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:http'
import { join } from 'node:path'
import { Writable } from 'node:stream'
import { test } from 'node:test'
import pino from 'pino'
import { type CgiLibraryOptions, cgi } from '../../src/gateways/cgi/action.js'
import { envLines, eventually, fetchText } from '../support/cgi-client.js'
import { FIXTURES, tempDir } from '../support/helpers.js'

const CGI = join(FIXTURES, 'cgi')

function memoryLog() {
  const lines: Record<string, unknown>[] = []
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const line of chunk.toString().split('\n')) if (line) lines.push(JSON.parse(line))
      cb()
    },
  })
  return { log: pino({ level: 'debug' }, stream), lines }
}

async function start(t: { after: (fn: () => Promise<void>) => void }, options: CgiLibraryOptions) {
  const listener = cgi({ log: pino({ level: 'silent' }), ...options })
  const server = createServer(listener)
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  t.after(async () => {
    server.closeAllConnections()
    await listener.close()
    await new Promise((r) => server.close(r))
  })
  return { port: (server.address() as { port: number }).port, listener }
}

/** Children of `parent` whose command line includes `command`. */
function childrenRunning(parent: number, command: string): number[] {
  const out: number[] = []
  for (const pid of readdirSync('/proc')) {
    if (!/^\d+$/.test(pid)) continue
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1])
      if (ppid !== parent) continue
      if (readFileSync(`/proc/${pid}/cmdline`, 'latin1').includes(command)) out.push(Number(pid))
    } catch {
      // gone meanwhile
    }
  }
  return out
}

/** Our children that run the fork server. */
function forkServers(): number[] {
  return childrenRunning(process.pid, 'gatehouse_spawn/forkserver.py')
}

test('the script gets exactly the environment Gatehouse built, nothing of the fork server', async (t) => {
  const { port } = await start(t, { root: CGI, pass_env: [], env: { ONLY: 'this' } })
  const r = await fetchText(port, '/env.sh?q=1')
  assert.equal(r.status, 200)
  const env = envLines(r.text)
  assert.equal(env.ONLY, 'this')
  assert.equal(env.QUERY_STRING, 'q=1')
  assert.equal(env.PATH, '/usr/local/bin:/usr/bin:/bin', 'no PATH passed: the fallback')
  // What Python sets in its own environment (LC_CTYPE under locale coercion) and what a
  // shell adds (PWD, SHLVL, _) are the only names not from us.
  const ours = Object.keys(env).filter((n) => !['PWD', 'SHLVL', '_', 'OLDPWD'].includes(n))
  for (const name of ours) {
    assert.ok(
      /^(ONLY|PATH|GATEWAY_INTERFACE|SERVER_|REQUEST_|QUERY_STRING|SCRIPT_|DOCUMENT_ROOT|REMOTE_|HTTP_|REDIRECT_STATUS)/.test(
        name,
      ),
      `unexpected variable ${name}`,
    )
  }
})

test('no shell: a script path with spaces and ";" and interpreter arguments with shell syntax', async (t) => {
  const dir = tempDir(t)
  const sub = join(dir, 'a b;c')
  mkdirSync(sub)
  writeFileSync(
    join(sub, 'run me;touch pwned.tsh'),
    'printf "Content-Type: text/plain\\n\\n"\nprintf "0=%s\\nX=%s\\nPWD=%s\\n" "$0" "$X" "$(pwd)"\n',
  )
  const { port } = await start(t, {
    root: dir,
    // env(1) sets X to the whole "1;touch pwned" and runs sh on the script: no shell parses it.
    interpreters: { '.tsh': ['/usr/bin/env', 'X=1; touch pwned; $(touch pwned2)', '/bin/sh'] },
  })
  const r = await fetchText(
    port,
    `/${encodeURIComponent('a b;c')}/${encodeURIComponent('run me;touch pwned.tsh')}`,
  )
  assert.equal(r.status, 200, r.text)
  const lines = r.text.split('\n')
  assert.equal(lines[0], `0=${join(sub, 'run me;touch pwned.tsh')}`)
  assert.equal(lines[1], 'X=1; touch pwned; $(touch pwned2)')
  assert.equal(lines[2], `PWD=${sub}`, 'cwd is the script directory')
  assert.deepEqual(readdirSync(sub).sort(), ['run me;touch pwned.tsh'])
  assert.deepEqual(readdirSync(dir).sort(), ['a b;c'])
})

test('the pid Gatehouse logs is the script itself, and stderr is tagged with it', async (t) => {
  const dir = tempDir(t)
  writeFileSync(
    join(dir, 'pid.sh'),
    '#!/bin/sh\necho "my pid $$" >&2\nprintf "Content-Type: text/plain\\n\\n%s\\n" "$$"\n',
    { mode: 0o755 },
  )
  const { log, lines } = memoryLog()
  const { port } = await start(t, { root: dir, log })
  const r = await fetchText(port, '/pid.sh')
  assert.equal(r.status, 200)
  const pid = Number(r.text.trim())
  assert.ok(pid > 0)
  assert.ok(await eventually(() => lines.some((l) => l.msg === `my pid ${pid}`)))
  const line = lines.find((l) => l.msg === `my pid ${pid}`)!
  assert.equal(line.script_pid, pid)
  assert.equal(line.script, join(dir, 'pid.sh'))
})

test('an execve failure is a 502 naming the program', async (t) => {
  const { log, lines } = memoryLog()
  const { port } = await start(t, { root: CGI, interpreters: { '.sh': '/nonexistent/sh' }, log })
  assert.equal((await fetchText(port, '/env.sh')).status, 502)
  assert.ok(
    await eventually(() =>
      lines.some((l) => /\/nonexistent\/sh/.test(String((l.err as { message?: string })?.message))),
    ),
  )
  // The fork server is fine afterwards.
  const ok = await start(t, { root: CGI })
  assert.equal((await fetchText(ok.port, '/env.sh')).status, 200)
})

test('a request body reaches the script through the fork server, also when it is not read', async (t) => {
  const { port } = await start(t, { root: CGI, interpreters: { '.py': '/usr/bin/python3' } })
  const body = 'x'.repeat(300_000)
  const r = await fetchText(port, '/count.py', { method: 'POST', body })
  assert.equal(r.status, 200)
  assert.match(r.text, /bytes=300000 /)
  const unread = await fetchText(port, '/no-read.sh', { method: 'POST', body })
  assert.equal(unread.status, 200)
})

test('the fork server dying fails the requests in flight (502) and is restarted', async (t) => {
  const { log, lines } = memoryLog()
  const { port, listener } = await start(t, { root: CGI, log, timeout: '60s', kill_grace: '200ms' })
  assert.equal((await fetchText(port, '/env.sh')).status, 200)
  const [first] = forkServers()
  assert.ok(first, 'a fork server runs')
  assert.ok(await eventually(() => listener.stats().running === 0))
  const inFlight = fetchText(port, '/sleep.sh')
  // Started by this fork server, not merely waiting for a slot.
  assert.ok(await eventually(() => childrenRunning(first, 'sleep.sh').length === 1))
  process.kill(first, 'SIGKILL')
  const lostReply = await inFlight
  assert.equal(
    lostReply.status,
    502,
    JSON.stringify(lines.map((l) => [l.msg, (l.err as { message?: string } | undefined)?.message])),
  )
  assert.ok(await eventually(() => listener.stats().running === 0))
  assert.ok(lines.some((l) => /fork server died/.test(String(l.msg))))
  const after = await fetchText(port, '/env.sh')
  assert.equal(after.status, 200)
  const [second] = forkServers()
  assert.ok(second !== undefined && second !== first, 'a new fork server')
})

test('spawner = "direct" runs scripts with child_process.spawn, no fork server', async (t) => {
  const before = forkServers().length
  const { port } = await start(t, { root: CGI, spawner: 'direct', env: { GH_TEST: 'direct' } })
  const r = await fetchText(port, '/env.sh')
  assert.equal(r.status, 200)
  assert.equal(envLines(r.text).GH_TEST, 'direct')
  assert.equal(forkServers().length, before)
})

test('a missing interpreter for the fork server falls back to direct spawning, with one warning', async (t) => {
  const { log, lines } = memoryLog()
  const { port } = await start(t, { root: CGI, spawner_python: '/nonexistent/python3', log })
  for (let i = 0; i < 3; i++) assert.equal((await fetchText(port, '/env.sh')).status, 200)
  const warnings = lines.filter((l) => /fork server unavailable/.test(String(l.msg)))
  assert.equal(warnings.length, 1)
})

test('closing the handler stops its fork server', async (t) => {
  const before = new Set(forkServers())
  const listener = cgi({ root: CGI, log: pino({ level: 'silent' }) })
  const server = createServer(listener)
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  t.after(() => new Promise((r) => server.close(r)))
  const { port } = server.address() as { port: number }
  assert.equal((await fetchText(port, '/env.sh')).status, 200)
  const mine = forkServers().filter((p) => !before.has(p))
  assert.equal(mine.length, 1)
  await listener.close()
  assert.ok(await eventually(() => !forkServers().includes(mine[0]!)))
})
