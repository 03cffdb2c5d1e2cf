/*
 * The `fastcgi` action (nginx's fastcgi_pass + fastcgi_param) and the CLI flags: against
 * php-fpm for what an application sees, and against a misbehaving server for the status a
 * client gets when the upstream fails (502, 503, 504) and for ABORT_REQUEST.
 */
import assert from 'node:assert/strict'
import { spawn, spawnSync } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import { request as httpRequest } from 'node:http'
import { connect } from 'node:net'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { request } from 'undici'
import type { GatehouseConfigInput } from '../../../src/config.js'
import { validateConfig } from '../../../src/config.js'
import { GatehouseError } from '../../../src/core/errors.js'
import { createGatehouse, type Gatehouse } from '../../../src/gatehouse.js'
import { RecordType } from '../../../src/gateways/fastcgi/codec.js'
import {
  emptyStdout,
  endRequest,
  type FakeServer,
  startFakeFastCGI,
  stdout,
} from '../../support/fake-fastcgi.js'
import { CLI, tempDir } from '../../support/helpers.js'
import { type PhpFpm, phpFpmUnavailable, startPhpFpm } from '../../support/php-fpm.js'

type FastCGIInput = NonNullable<NonNullable<GatehouseConfigInput['routes']>[number]['fastcgi']>

async function start(routes: GatehouseConfigInput['routes'], servers: Gatehouse[]): Promise<string> {
  const gatehouse = createGatehouse({ listen: ['127.0.0.1:0'], log: { level: 'silent' }, routes })
  servers.push(gatehouse)
  const [first] = await gatehouse.listen()
  return `http://127.0.0.1:${first!.port}`
}

const ENV_DUMP = `<?php header('Content-Type: application/json');
  echo json_encode(array_intersect_key($_SERVER, array_flip(['SCRIPT_NAME', 'SCRIPT_FILENAME', 'PATH_INFO',
    'PATH_TRANSLATED', 'DOCUMENT_ROOT', 'APP_ENV', 'REQUEST_URI', 'QUERY_STRING', 'REQUEST_METHOD'])));`

describe('fastcgi action against php-fpm', { skip: phpFpmUnavailable() }, () => {
  let fpm: PhpFpm
  const servers: Gatehouse[] = []
  before(async () => {
    fpm = await startPhpFpm({ maxChildren: 2 })
    writeFileSync(join(fpm.dir, 'env.php'), ENV_DUMP)
  })
  after(async () => {
    await Promise.all(servers.map((g) => g.close(0)))
    await fpm.stop()
  })

  test('mounted at a prefix: SCRIPT_NAME is the prefix, PATH_INFO the rest, params are added', async () => {
    const origin = await start(
      [
        {
          path: '/app',
          fastcgi: {
            pass: fpm.address,
            params: { SCRIPT_FILENAME: join(fpm.dir, 'env.php'), APP_ENV: 'test' },
          },
        },
      ],
      servers,
    )
    const res = await request(`${origin}/app/some/where?x=1`)
    assert.deepEqual(await res.body.json(), {
      SCRIPT_NAME: '/app',
      SCRIPT_FILENAME: join(fpm.dir, 'env.php'),
      PATH_INFO: '/some/where',
      APP_ENV: 'test',
      REQUEST_URI: '/app/some/where?x=1',
      QUERY_STRING: 'x=1',
      REQUEST_METHOD: 'GET',
    })
  })

  test('document_root sets DOCUMENT_ROOT and PATH_TRANSLATED; params override meta-variables', async () => {
    const origin = await start(
      [
        {
          path: '/',
          fastcgi: {
            pass: fpm.address,
            document_root: fpm.dir,
            params: { SCRIPT_FILENAME: join(fpm.dir, 'env.php'), SCRIPT_NAME: '/env.php' },
          },
        },
      ],
      servers,
    )
    const res = await request(`${origin}/x/y`)
    const got = (await res.body.json()) as Record<string, string>
    assert.equal(got.DOCUMENT_ROOT, fpm.dir)
    assert.equal(got.PATH_TRANSLATED, `${fpm.dir}/x/y`)
    assert.equal(got.SCRIPT_NAME, '/env.php')
  })

  test('gatehouse serve --php DOCROOT --fastcgi ADDR --fastcgi-pass PREFIX=ADDR', async (t) => {
    const dir = tempDir(t, 'gh-php-cli-')
    writeFileSync(join(dir, 'index.php'), ENV_DUMP)
    const child = spawn(
      process.execPath,
      [
        CLI,
        'serve',
        '--listen',
        '127.0.0.1:0',
        '--php',
        dir,
        '--fastcgi',
        fpm.address,
        '--fastcgi-pass',
        `/fpm=${fpm.address}`,
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    )
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
    t.after(async () => {
      child.kill('SIGTERM')
      await exited
    })
    const port = await new Promise<number>((resolve, reject) => {
      let err = ''
      child.stderr!.setEncoding('utf8')
      child.stderr!.on('data', (d: string) => {
        err += d
        const m = /"listen":"127\.0\.0\.1:(\d+)","msg":"listening"/.exec(err)
        if (m) resolve(Number(m[1]))
      })
      void exited.then(() => reject(new Error(`exited:\n${err}`)))
    })
    const front = await request(`http://127.0.0.1:${port}/any/page`)
    const got = (await front.body.json()) as Record<string, string>
    assert.equal(got.SCRIPT_FILENAME, join(dir, 'index.php'))
    assert.equal(got.REQUEST_URI, '/any/page')
    // /fpm has no SCRIPT_FILENAME: php-fpm answers its own 404 ("File not found.").
    const pass = await request(`http://127.0.0.1:${port}/fpm/x`)
    assert.equal(pass.statusCode, 404)
    assert.match(await pass.body.text(), /File not found/)
  })
})

describe('fastcgi action: what the client sees when the upstream fails', () => {
  let fake: FakeServer
  let origin: string
  const servers: Gatehouse[] = []
  const ok = (req: { respond: (s: string) => void }) => req.respond('Content-Type: text/plain\r\n\r\nfine')
  before(async () => {
    fake = await startFakeFastCGI(ok)
    const fastcgi: FastCGIInput = { pass: fake.address, read_timeout: '300ms' }
    origin = await start([{ path: '/', fastcgi }], servers)
  })
  after(async () => {
    await Promise.all(servers.map((g) => g.close(0)))
    await fake.close()
  })

  const status = async (path = '/') => {
    const res = await request(origin + path)
    return { status: res.statusCode, text: await res.body.text() }
  }

  test('garbage: 502; closed before the head: 502; OVERLOADED: 503; no answer: 504; then fine again', async () => {
    fake.setBehaviour((req) => req.write(Buffer.from('HTTP/1.1 200 OK\r\n\r\n')))
    assert.equal((await status()).status, 502)
    fake.setBehaviour((req) => req.socket.destroy())
    assert.equal((await status()).status, 502)
    fake.setBehaviour((req) => req.write(endRequest(2)))
    assert.equal((await status()).status, 503)
    fake.setBehaviour(() => {})
    assert.equal((await status()).status, 504)
    fake.setBehaviour(ok)
    assert.deepEqual(await status(), { status: 200, text: 'fine' })
  })

  test('an upstream that dies mid-body cuts the client connection (no silent truncation)', async () => {
    fake.setBehaviour((req) => {
      req.write(stdout('Content-Type: text/plain\r\n\r\nfirst part'))
      setTimeout(() => req.socket.destroy(), 30)
    })
    const res = await request(origin)
    assert.equal(res.statusCode, 200)
    await assert.rejects(res.body.text())
    fake.setBehaviour(ok)
    assert.deepEqual(await status(), { status: 200, text: 'fine' })
  })

  test('a body shorter than its Content-Length is a 502 (or a cut connection once streaming); a longer one is cut to it', async () => {
    fake.setBehaviour((req) => req.respond('Content-Type: text/plain\r\nContent-Length: 10\r\n\r\nshort'))
    assert.equal((await status()).status, 502)
    fake.setBehaviour((req) => {
      req.write(stdout('Content-Type: text/plain\r\nContent-Length: 10\r\n\r\nshort'))
      setTimeout(() => req.write([emptyStdout(), endRequest()]), 30)
    })
    const res = await request(origin)
    assert.equal(res.statusCode, 200)
    await assert.rejects(res.body.text())
    fake.setBehaviour((req) => req.respond('Content-Type: text/plain\r\nContent-Length: 4\r\n\r\nlonger'))
    assert.deepEqual(await status(), { status: 200, text: 'long' })
    fake.setBehaviour(ok)
    assert.deepEqual(await status(), { status: 200, text: 'fine' })
  })

  test('a client that leaves makes the pool send ABORT_REQUEST', async () => {
    let resolveAbort!: () => void
    const aborted = new Promise<void>((r) => (resolveAbort = r))
    fake.setBehaviour((req) => {
      req.write(stdout('Content-Type: text/plain\r\n\r\nstarted'))
      req.socket.on('data', (chunk: Buffer) => {
        if (chunk[1] === RecordType.ABORT_REQUEST) {
          req.write([emptyStdout(), endRequest()])
          resolveAbort()
        }
      })
    })
    const { port } = new URL(origin)
    await new Promise<void>((resolve, reject) => {
      const req = httpRequest({ host: '127.0.0.1', port, path: '/', agent: false }, (res) => {
        res.once('data', () => {
          req.destroy()
          resolve()
        })
      })
      req.on('error', (err: NodeJS.ErrnoException) => (err.code === 'ECONNRESET' ? resolve() : reject(err)))
      req.end()
    })
    await aborted
    fake.setBehaviour(ok)
    assert.deepEqual(await status(), { status: 200, text: 'fine' })
  })

  test('request_buffering: the upstream is not asked before the whole body has arrived', async () => {
    const buffered = await start(
      [{ path: '/', fastcgi: { pass: fake.address, request_buffering: true } }],
      servers,
    )
    fake.setBehaviour((req) =>
      req.respond(`Content-Type: text/plain\r\n\r\n${req.stdin.length} ${req.params.get('CONTENT_LENGTH')}`),
    )
    const before = fake.connections
    const socket = connect(Number(new URL(buffered).port), '127.0.0.1')
    socket.write('POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\nConnection: close\r\n\r\nhello')
    let reply = ''
    socket.on('data', (d: Buffer) => (reply += d.toString()))
    await sleep(200)
    assert.equal(fake.connections, before, 'no connection to the upstream while the body is incomplete')
    socket.write('world')
    await new Promise((resolve) => socket.once('close', resolve))
    assert.match(reply, /^HTTP\/1\.1 200/)
    assert.match(reply, /\r\n\r\n10 10$/)
    fake.setBehaviour(ok)
  })

  test('an upstream socket that does not exist: 502', async (t) => {
    const dir = tempDir(t)
    const gone = await start([{ path: '/', fastcgi: { pass: `unix:${join(dir, 'none.sock')}` } }], servers)
    const res = await request(gone)
    await res.body.dump()
    assert.equal(res.statusCode, 502)
  })
})

describe('fastcgi and php configuration', () => {
  test('bad addresses, unknown keys and bad params are reported with their paths', () => {
    assert.throws(
      () =>
        validateConfig({
          routes: [
            { path: '/a', fastcgi: { pass: 'localhost', params: { 'BAD NAME': 'x' }, max_conections: 3 } },
            {
              path: '/b',
              php: { root: '/nonexistent-gatehouse-root', fastcgi: '127.0.0.1:0', index: 'main.html' },
            },
          ],
        }),
      (err) => {
        assert.ok(err instanceof GatehouseError)
        const text = err.problems.join('\n')
        // A bare word is the name of an upstream group, and there is none.
        assert.match(text, /routes\[0\]\.fastcgi\.pass: no upstream group "localhost"/)
        assert.match(
          text,
          /routes\[0\]\.fastcgi: unknown key "max_conections" \(did you mean "max_connections"\?\)/,
        )
        assert.match(text, /routes\[0\]\.fastcgi\.params\.BAD NAME/)
        assert.match(text, /routes\[1\]\.php\.root: no such directory/)
        assert.match(text, /routes\[1\]\.php\.fastcgi: an upstream needs a port/)
        assert.match(text, /routes\[1\]\.php\.index: a file name ending in \.php/)
        return true
      },
    )
  })

  test('pool flags with --fastcgi, and --fastcgi without --php, are usage errors (exit 2)', (t) => {
    const dir = tempDir(t)
    // Without --fastcgi, --php runs a managed php-cgi pool (test/gateways/php/pool.test.ts).
    const r1 = spawnSync(
      process.execPath,
      [CLI, 'serve', '--php', dir, '--fastcgi', 'unix:/x.sock', '--max-children', '3'],
      { encoding: 'utf8', timeout: 20_000 },
    )
    assert.equal(r1.status, 2)
    assert.match(r1.stderr, /are for a managed php-cgi pool: drop --fastcgi/)
    const r2 = spawnSync(process.execPath, [CLI, 'serve', '--fastcgi', 'unix:/x.sock', '--static', dir], {
      encoding: 'utf8',
      timeout: 20_000,
    })
    assert.equal(r2.status, 2)
    assert.match(r2.stderr, /--fastcgi names the server for --php/)
  })
})
