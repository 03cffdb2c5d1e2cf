/*
 * A client that gives up on a slow PHP request must not make its php-cgi worker look free:
 * php-cgi runs the script to its end whatever the client does, so the worker is busy until
 * FCGI_END_REQUEST (or until it is replaced). php-fpm behind the FastCGI client behaves so;
 * the managed pool must too (issue 18, severe item 2).
 */
import assert from 'node:assert/strict'
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { connect } from 'node:net'
import { join } from 'node:path'
import { test } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { request } from 'undici'
import { ABORT_GRACE_MS } from '../../../src/gateways/fastcgi/exchange.js'
import { eventually, startGatehouse, tempDir } from '../../support/helpers.js'

const PHP_CGI = '/usr/bin/php-cgi'

test(
  'an abandoned slow request keeps its worker busy; new requests go to the other worker',
  {
    skip: existsSync(PHP_CGI) ? false : `${PHP_CGI} not found (Debian package php-cgi)`,
  },
  async (t) => {
    const dir = tempDir(t, 'gh-abandon-')
    writeFileSync(join(dir, 'index.php'), '<?php echo getmypid();')
    // Runs until the test releases it (at most 60 s): the checks below need it running.
    writeFileSync(
      join(dir, 'slow.php'),
      `<?php file_put_contents(__DIR__ . '/busy.pid', getmypid());
      for ($i = 0; $i < 600 && !file_exists(__DIR__ . '/release'); $i++) usleep(100000);
      echo "done";`,
    )
    const { origin, port } = await startGatehouse(t, {
      routes: [
        { exact: '/status', status: { pool: 'php' } },
        { path: '/', php: { root: dir, workers: { pm: 'static', max_children: 2 } } },
      ],
    })
    // Both workers up and serving.
    await eventually(async () => {
      const r = await request(`${origin}/index.php`)
      await r.body.dump()
      return r.statusCode === 200
    }, 'the pool')

    const client = connect(port, '127.0.0.1')
    client.on('error', () => {})
    client.write(`GET /slow.php HTTP/1.1\r\nHost: x\r\n\r\n`)
    const busyPid = await eventually(() => {
      const file = join(dir, 'busy.pid')
      return existsSync(file) && readFileSync(file, 'utf8')
    }, 'the slow script to start')
    client.destroy()
    // Past the grace in which an aborted exchange waits for END_REQUEST: php-cgi ignores
    // ABORT_REQUEST and the script runs on.
    await sleep(ABORT_GRACE_MS + 500)

    const status = JSON.parse(await (await request(`${origin}/status?json&full`)).body.text()) as {
      processes: { pid: number; state: string }[]
    }
    const worker = status.processes.find((p) => String(p.pid) === busyPid)
    assert.ok(worker, `worker ${busyPid} is in the pool`)
    assert.equal(worker.state, 'Running', 'the worker still runs the abandoned script')

    for (let i = 0; i < 4; i++) {
      const r = await request(`${origin}/index.php`)
      assert.equal(r.statusCode, 200)
      assert.notEqual(await r.body.text(), busyPid, 'served by the free worker, not queued behind the script')
    }

    // Once the script ends (END_REQUEST), the worker is idle again and takes requests.
    writeFileSync(join(dir, 'release'), '')
    await eventually(async () => {
      const s = JSON.parse(await (await request(`${origin}/status?json&full`)).body.text()) as {
        processes: { pid: number; state: string }[]
      }
      return s.processes.find((p) => String(p.pid) === busyPid)?.state === 'Idle'
    }, 'the worker to be idle after its script ended')
    // Two requests at once need both workers (the pool prefers the worker idle the shortest
    // time, so sequential requests would all go to the other one): each waits for the other.
    writeFileSync(
      join(dir, 'pair.php'),
      `<?php file_put_contents(__DIR__ . '/pair', getmypid() . "\\n", FILE_APPEND | LOCK_EX);
      for ($i = 0; $i < 100 && count(file(__DIR__ . '/pair')) < 2; $i++) usleep(100000);
      echo getmypid();`,
    )
    const pair = await Promise.all([0, 1].map(async () => (await request(`${origin}/pair.php`)).body.text()))
    const pids = new Set(pair)
    assert.equal(pids.size, 2, 'the two requests ran at once on the two workers')
    assert.ok(pids.has(busyPid), 'the worker serves again')
  },
)
