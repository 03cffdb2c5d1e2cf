/*
 * X-Sendfile and X-Accel-Redirect (issue 17): a PHP (php-cgi), WSGI or CGI app names a file,
 * Gatehouse drops the app's body and serves the file itself, with Range and ETag; paths
 * outside the allowed root, and URIs that no internal route serves, are refused with their
 * codes; internal routes are not reachable from outside; a route without `sendfile` passes
 * the headers through as before.
 */
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { mkdirSync, truncateSync, writeFileSync } from 'node:fs'
import { request, type IncomingMessage } from 'node:http'
import { join } from 'node:path'
import { test, type TestContext } from 'node:test'
import { promisify } from 'node:util'
import { eventually, FIXTURES, logLines, PYTHON, startGatehouse, tempDir } from '../support/helpers.js'

const OFFLOAD = join(FIXTURES, 'offload')
const run = promisify(execFile)
const REPORT = Array.from({ length: 200 }, (_, i) => `report line ${i}\n`).join('')

/** curl -i: status, lower-cased head, body. */
async function curl(url: string, ...args: string[]) {
  const { stdout } = await run('curl', ['-sS', '-i', '--max-time', '30', ...args, url], {
    maxBuffer: 16 * 1024 * 1024,
  })
  const at = stdout.indexOf('\r\n\r\n')
  const head = stdout.slice(0, at).toLowerCase()
  return { status: Number(/^http\/1\.1 (\d{3})/.exec(head)?.[1]), head, body: stdout.slice(at + 4) }
}

const header = (head: string, name: string) => new RegExp(`\r\n${name}: ([^\r]*)`).exec(head)?.[1]

function files(t: TestContext) {
  const dir = tempDir(t, 'gh-offload-')
  const root = join(dir, 'files')
  mkdirSync(root)
  writeFileSync(join(root, 'report.txt'), REPORT)
  writeFileSync(join(dir, 'secret.txt'), 'secret\n')
  return { dir, root, log: join(dir, 'error.log') }
}

test('PHP X-Sendfile: the file with Range and ETag, the app body dropped, Content-Disposition and Set-Cookie kept', async (t) => {
  const { root, dir, log } = files(t)
  const { origin } = await startGatehouse(t, {
    log: { level: 'warn', error_log: log },
    routes: [
      { path: '/plain/', php: { root: join(OFFLOAD, 'php'), workers: { pm: 'static', max_children: 1 } } },
      {
        path: '/',
        sendfile: { root },
        php: { root: join(OFFLOAD, 'php'), workers: { pm: 'static', max_children: 1 } },
      },
    ],
  })
  const url = `${origin}/offload.php?path=${encodeURIComponent(join(root, 'report.txt'))}`
  const whole = await curl(url)
  assert.equal(whole.status, 200)
  assert.equal(whole.body, REPORT)
  assert.equal(header(whole.head, 'content-type'), 'text/plain; charset=utf-8')
  assert.equal(header(whole.head, 'content-length'), String(REPORT.length))
  assert.equal(header(whole.head, 'content-disposition'), 'attachment; filename="report.txt"')
  assert.equal(header(whole.head, 'set-cookie'), 'seen=1')
  assert.equal(header(whole.head, 'x-sendfile'), undefined)
  assert.equal(header(whole.head, 'x-accel-buffering'), undefined)
  const etag = header(whole.head, 'etag')
  assert.ok(etag)

  const part = await curl(url, '-r', '15-29')
  assert.equal(part.status, 206)
  assert.equal(part.body, REPORT.slice(15, 30))
  assert.equal(header(part.head, 'content-range'), `bytes 15-29/${REPORT.length}`)

  const again = await curl(url, '-H', `If-None-Match: ${etag}`)
  assert.equal(again.status, 304)
  assert.equal(again.body, '')

  // A path relative to the root is under it; a directory there is no file.
  assert.equal((await curl(`${origin}/offload.php?path=report.txt`)).body, REPORT)
  mkdirSync(join(root, 'sub'))
  const directory = await curl(`${origin}/offload.php?path=sub`)
  assert.equal(directory.status, 404)
  assert.equal(header(directory.head, 'location'), undefined)

  for (const outside of ['/etc/passwd', join(root, '../secret.txt'), '../secret.txt', root]) {
    const refused = await curl(`${origin}/offload.php?path=${encodeURIComponent(outside)}`)
    assert.equal(refused.status, 403, outside)
    assert.doesNotMatch(refused.body, /secret|root:|dropped/)
  }
  const lines = await eventually(
    () => logLines(log).filter((l) => l.code === 'GH_ERR_SENDFILE_PATH').length === 4 && logLines(log),
    'the GH_ERR_SENDFILE_PATH log lines',
  )
  assert.ok(lines.some((l) => l.path === '/etc/passwd' && l.root === root))

  // Without `sendfile` on the route, the app's head and body go out as they are.
  const plain = await curl(`${origin}/plain/offload.php?path=${encodeURIComponent(join(dir, 'secret.txt'))}`)
  assert.equal(plain.status, 200)
  assert.equal(header(plain.head, 'x-sendfile'), join(dir, 'secret.txt').toLowerCase())
  assert.match(plain.body, /^this body must be dropped\n/)
})

test('X-Accel-Redirect: an internal route serves the URI; the route itself is 404 from outside; an unknown URI is 404', async (t) => {
  const { root, log } = files(t)
  const { origin } = await startGatehouse(t, {
    log: { level: 'warn', error_log: log },
    routes: [
      { path: '/protected/', internal: true, static: { root } },
      { path: '/public/', static: { root } },
      {
        path: '/',
        sendfile: { accel_redirect: true },
        php: { root: join(OFFLOAD, 'php'), workers: { pm: 'static', max_children: 1 } },
      },
    ],
  })
  const ok = await curl(`${origin}/offload.php?uri=/protected/report.txt`, '-r', '0-13')
  assert.equal(ok.status, 206)
  assert.equal(ok.body, REPORT.slice(0, 14))
  assert.equal(header(ok.head, 'content-disposition'), 'attachment; filename="report.txt"')
  assert.equal(header(ok.head, 'x-accel-redirect'), undefined)

  assert.equal((await curl(`${origin}/protected/report.txt`)).status, 404)
  assert.equal((await curl(`${origin}/public/report.txt`)).status, 200)
  for (const uri of ['/public/report.txt', '/protected/missing.txt', '/nowhere']) {
    const refused = await curl(`${origin}/offload.php?uri=${encodeURIComponent(uri)}`)
    assert.equal(refused.status, 404, uri)
    assert.doesNotMatch(refused.body, /dropped|report line/)
  }
  await eventually(
    () => logLines(log).filter((l) => l.code === 'GH_ERR_ACCEL_REDIRECT').length === 2,
    'GH_ERR_ACCEL_REDIRECT for the public route and the unknown URI',
  )
})

/** GET through node:http, resolving at the head; the body is left unread. */
function head(origin: string, path: string): Promise<IncomingMessage> {
  return new Promise((resolve, reject) => {
    const req = request(`${origin}${path}`, { agent: false }, resolve)
    req.on('error', reject)
    req.end()
  })
}

test('WSGI X-Sendfile: Range through curl, and the one worker is free while a large file still goes to a client that does not read', async (t) => {
  const { root } = files(t)
  writeFileSync(join(root, 'big.bin'), '')
  truncateSync(join(root, 'big.bin'), 256 * 1024 * 1024)
  const { origin } = await startGatehouse(t, {
    routes: [
      {
        path: '/',
        sendfile: { root },
        wsgi: {
          app: 'wsgi_offload:application',
          chdir: OFFLOAD,
          python: PYTHON,
          workers: 1,
          threads: 1,
          response_buffering: false,
        },
      },
    ],
  })
  await eventually(async () => (await curl(`${origin}/hello`)).status === 200, 'the WSGI pool')
  const part = await curl(`${origin}/file?path=${encodeURIComponent(join(root, 'report.txt'))}`, '-r', '-10')
  assert.equal(part.status, 206)
  assert.equal(part.body, REPORT.slice(-10))
  assert.equal(header(part.head, 'cache-control'), 'private, max-age=60')
  assert.equal(header(part.head, 'content-type'), 'text/plain; charset=utf-8')

  const stuck = await head(origin, `/file?path=${encodeURIComponent(join(root, 'big.bin'))}`)
  t.after(() => stuck.destroy())
  assert.equal(stuck.statusCode, 200)
  assert.equal(stuck.headers['content-length'], String(256 * 1024 * 1024))
  // The file is not read by its client, yet the app's only thread answers the next request.
  const next = await curl(`${origin}/hello`)
  assert.equal(next.body, 'hello')
})

test('CGI and ASGI X-Sendfile: the file, not the app body; with `encode` the file is compressed', async (t) => {
  const { root } = files(t)
  const { origin } = await startGatehouse(t, {
    routes: [
      {
        path: '/asgi',
        sendfile: { root },
        encode: true,
        asgi: { app: 'asgi_offload:app', chdir: OFFLOAD, python: PYTHON, workers: 1 },
      },
      { path: '/', sendfile: { root }, cgi: { root: OFFLOAD } },
    ],
  })
  const r = await curl(`${origin}/offload.sh?report.txt`)
  assert.equal(r.status, 200)
  assert.equal(r.body, REPORT)
  const refused = await curl(`${origin}/offload.sh?/etc/passwd`)
  assert.equal(refused.status, 403)

  const asgi = await eventually(async () => {
    const a = await curl(`${origin}/asgi?report.txt`, '--compressed')
    return a.status === 200 && a
  }, 'the ASGI pool')
  assert.equal(asgi.body, REPORT)
  assert.match(asgi.head, /\r\ncontent-encoding: (gzip|br|zstd)\r\n/)
  const part = await curl(`${origin}/asgi?report.txt`, '-r', '0-4')
  assert.equal(part.status, 206)
  assert.equal(part.body, REPORT.slice(0, 5))
})
