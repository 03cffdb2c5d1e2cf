/*
 * `user`, `group` and `umask` (issue 17, "Running as a service"): started as root, the
 * server binds, then runs as the user; its WSGI workers and CGI scripts run as the user from
 * the start; the umask reaches the server and its children. Root only (CI runs as root).
 */
import assert from 'node:assert/strict'
import { execFileSync, spawn, spawnSync } from 'node:child_process'
import { chmodSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { test } from 'node:test'
import { CLI, eventually, listeningAddress, stopServe, tempDir } from '../support/helpers.js'

const isRoot = process.getuid?.() === 0

function statusOf(pid: number): Record<string, string> {
  const out: Record<string, string> = {}
  for (const line of readFileSync(`/proc/${pid}/status`, 'utf8').split('\n')) {
    const i = line.indexOf(':')
    if (i > 0) out[line.slice(0, i)] = line.slice(i + 1).trim()
  }
  return out
}

function childrenOf(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8')
      .trim()
      .split(/\s+/)
      .filter(Boolean)
      .map(Number)
  } catch {
    return []
  }
}

test(
  '--user/--group/--umask: the server drops after binding; workers and CGI scripts run as the user',
  { skip: !isRoot && 'needs root' },
  async (t) => {
    const nobody = execFileSync('getent', ['passwd', 'nobody'], { encoding: 'utf8' }).split(':')
    const uid = nobody[2]!
    const gid = execFileSync('getent', ['group', 'nogroup'], { encoding: 'utf8' }).split(':')[2]!
    const dir = tempDir(t)
    chmodSync(dir, 0o755)
    writeFileSync(
      join(dir, 'whoami_app.py'),
      `import os\ndef application(environ, start_response):\n    body = ("%d %d %03o" % (os.getuid(), os.getgid(), os.umask(0o022))).encode()\n    start_response("200 OK", [("Content-Type", "text/plain")])\n    return [body]\n`,
    )
    const cgi = join(dir, 'cgi')
    execFileSync('mkdir', ['-m', '755', cgi])
    writeFileSync(
      join(cgi, 'id.sh'),
      '#!/bin/sh\nprintf "Content-Type: text/plain\\r\\n\\r\\n%s %s" "$(id -u)" "$(id -g)"\n',
    )
    chmodSync(join(cgi, 'id.sh'), 0o755)
    const config = join(dir, 'gatehouse.toml')
    writeFileSync(
      config,
      `listen = ["127.0.0.1:0"]\n[[routes]]\npath = "/cgi/"\ncgi = { root = ${JSON.stringify(cgi)} }\n[[routes]]\npath = "/"\nwsgi = { app = "whoami_app:application", chdir = ${JSON.stringify(dir)}, workers = 1 }\n`,
    )
    const serve = spawn(
      process.execPath,
      [CLI, 'serve', '--config', config, '--user', 'nobody', '--group', 'nogroup', '--umask', '027'],
      {
        stdio: ['ignore', 'ignore', 'pipe'],
      },
    )
    t.after(() => stopServe(serve))
    const { address, stderr } = await listeningAddress(serve)
    await eventually(() => stderr().includes('running as nobody'), 'the drop')
    const server = statusOf(serve.pid!)
    assert.equal(server.Uid, `${uid}\t${uid}\t${uid}\t${uid}`)
    assert.equal(server.Gid, `${gid}\t${gid}\t${gid}\t${gid}`)
    assert.equal(server.Umask, '0027')
    // The Python worker was started (before the drop) as nobody.
    const workers = childrenOf(serve.pid!)
    assert.ok(workers.length > 0)
    for (const pid of workers) assert.equal(statusOf(pid).Uid!.split('\t')[0], uid, `worker ${pid}`)
    const app = await fetch(`http://${address}/`)
    assert.equal(await app.text(), `${uid} ${gid} 027`)
    const script = await fetch(`http://${address}/cgi/id.sh`)
    assert.equal(script.status, 200)
    assert.equal(await script.text(), `${uid} ${gid}`)
  },
)

test(
  'a pool with its own user (the per-pool user of php-fpm): its workers run as it, the server stays root',
  { skip: !isRoot && 'needs root' },
  async (t) => {
    const uid = execFileSync('getent', ['passwd', 'nobody'], { encoding: 'utf8' }).split(':')[2]!
    const dir = tempDir(t)
    chmodSync(dir, 0o755)
    writeFileSync(
      join(dir, 'whoami_app.py'),
      `import os\ndef application(environ, start_response):\n    start_response("200 OK", [("Content-Type", "text/plain")])\n    return [str(os.getuid()).encode()]\n`,
    )
    const docroot = join(dir, 'php')
    execFileSync('mkdir', ['-m', '755', docroot])
    writeFileSync(join(docroot, 'id.php'), '<?php echo posix_geteuid();')
    const config = join(dir, 'gatehouse.toml')
    writeFileSync(
      config,
      `listen = ["127.0.0.1:0"]\n[[routes]]\npath = "/app/"\nwsgi = { app = "whoami_app:application", chdir = ${JSON.stringify(dir)}, workers = 1, user = "nobody" }\n[[routes]]\npath = "/"\nphp = { root = ${JSON.stringify(docroot)}, workers = { user = "nobody", group = "nogroup", pm = "static", max_children = 1 } }\n`,
    )
    const serve = spawn(process.execPath, [CLI, 'serve', '--config', config], {
      stdio: ['ignore', 'ignore', 'pipe'],
    })
    t.after(() => stopServe(serve))
    const { address } = await listeningAddress(serve)
    assert.equal(await (await fetch(`http://${address}/app/`)).text(), uid)
    assert.equal(statusOf(serve.pid!).Uid!.split('\t')[0], '0', 'the server itself stays root')
    const php = await fetch(`http://${address}/id.php`)
    assert.equal(await php.text(), uid)
  },
)

test(
  'user = another user without root: one line, exit 1',
  { skip: !isRoot && 'needs root to start as someone else' },
  () => {
    const nobody = Number(execFileSync('getent', ['passwd', 'nobody'], { encoding: 'utf8' }).split(':')[2])
    const run = spawnSync(
      process.execPath,
      [CLI, 'serve', '--listen', '127.0.0.1:0', '--static', '/tmp', '--user', 'root'],
      {
        uid: nobody,
        gid: nobody,
        encoding: 'utf8',
        timeout: 20_000,
      },
    )
    assert.equal(run.status, 1)
    assert.match(run.stderr, /only a server started as root can become another user/)
    const missing = spawnSync(
      process.execPath,
      [CLI, 'serve', '--listen', '127.0.0.1:0', '--static', '/tmp', '--user', 'no-such-user-here'],
      {
        encoding: 'utf8',
        timeout: 20_000,
      },
    )
    assert.equal(missing.status, 1)
    assert.match(missing.stderr, /no such user/)
  },
)

test(
  'a run directory left by a dead server of another user does not stop one running as nobody',
  { skip: !isRoot && 'needs root' },
  (t) => {
    // A dead pid's leftover (root's, not writable by nobody), as a root server killed earlier leaves.
    const left = join('/tmp', `gh-test-left-999999-${process.pid}`)
    execFileSync('mkdir', ['-p', join(left, 'sub')])
    writeFileSync(join(left, 'sub', 's'), '')
    t.after(() => execFileSync('rm', ['-rf', left]))
    const nobody = Number(execFileSync('getent', ['passwd', 'nobody'], { encoding: 'utf8' }).split(':')[2])
    const runDir = new URL('../../src/process/run-dir.js', import.meta.url).href
    const run = spawnSync(
      process.execPath,
      [
        '--input-type=module',
        '-e',
        `const m = await import(${JSON.stringify(runDir)}); console.log(JSON.stringify(m.removeLeftRunDirs('gh-test-left-')))`,
      ],
      { uid: nobody, gid: nobody, encoding: 'utf8', timeout: 20_000 },
    )
    assert.equal(run.status, 0, run.stderr)
    assert.equal(run.stdout.trim(), '[]', 'left in place, no exception')
  },
)
