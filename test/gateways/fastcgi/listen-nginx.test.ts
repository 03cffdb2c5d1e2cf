/**
 * nginx (Debian nginx-light) with `fastcgi_pass` in front of Gatehouse's FastCGI listener:
 * an upstream with `keepalive 8` and `fastcgi_keep_conn on`, Debian's fastcgi_params.
 */
import assert from 'node:assert/strict'
import { createHash, randomBytes } from 'node:crypto'
import { once } from 'node:events'
import { chmodSync, writeFileSync } from 'node:fs'
import { request as httpRequest } from 'node:http'
import { join } from 'node:path'
import { Readable } from 'node:stream'
import { describe, test } from 'node:test'
import { request } from 'undici'
import { connectionInfo } from '../../../src/http/connection.js'
import { createFastCGIServer } from '../../../src/gateways/fastcgi/server.js'
import { FIXTURES, startGatehouse, tempDir } from '../../support/helpers.js'
import { startNginx } from '../../support/peer-nginx.js'

/** The http-block upstream and the server-block location passing everything to it. */
const upstream = (address: string) => `upstream gh { server ${address}; keepalive 8; }
  client_max_body_size 20m;`
const PASS = `location / {
      include /etc/nginx/fastcgi_params;
      fastcgi_pass gh;
      fastcgi_keep_conn on;
    }`

/** Requests one after the other on `lanes` parallel lanes; all must answer 200 `expect`. */
async function many(url: string, total: number, lanes: number, expect: string): Promise<void> {
  const lane = async (n: number) => {
    for (let i = 0; i < n; i++) {
      const r = await request(url)
      assert.equal(r.statusCode, 200)
      assert.equal(await r.body.text(), expect)
    }
  }
  await Promise.all(Array.from({ length: lanes }, () => lane(total / lanes)))
}

describe('nginx fastcgi_pass in front of Gatehouse --fastcgi-listen', () => {
  test('static files, return routes, redirects and CGI scripts behind Gatehouse, all through nginx, over kept connections', async (t) => {
    const dir = tempDir(t, 'gh-fcgi-nginx-')
    writeFileSync(join(dir, 'page.html'), '<h1>static via FastCGI</h1>')
    const gh = await startGatehouse(t, {
      fastcgi_listen: ['127.0.0.1:0'],
      routes: [
        { exact: '/who', return: { body: '{remote_addr} {scheme} {host} {request_uri}' } },
        { exact: '/go', return: { status: 301, location: 'https://{host}/gone' } },
        { path: '/static', static: { root: dir } },
        { path: '/cgi-bin', cgi: { root: join(FIXTURES, 'cgi') } },
      ],
    })
    const address = gh.gatehouse.fastcgiAddresses()[0]!.address
    const nginx = await startNginx(t, dir, {
      http: upstream(address),
      server: `${PASS}
    location = /who-https {
      include /etc/nginx/fastcgi_params;
      fastcgi_param HTTPS on;
      fastcgi_param REQUEST_URI /who;
      fastcgi_pass gh;
      fastcgi_keep_conn on;
    }`,
    })

    const page = await request(`${nginx.origin}/static/page.html`)
    assert.equal(page.statusCode, 200)
    assert.match(String(page.headers.server), /^nginx\//)
    assert.equal(page.headers['content-type'], 'text/html; charset=utf-8')
    assert.ok(page.headers.etag)
    assert.equal(await page.body.text(), '<h1>static via FastCGI</h1>')

    const head = await request(`${nginx.origin}/static/page.html`, { method: 'HEAD' })
    assert.equal(head.statusCode, 200)
    assert.equal(head.headers['content-length'], '27')
    await head.body.dump()

    const notModified = await request(`${nginx.origin}/static/page.html`, {
      headers: { 'if-none-match': String(page.headers.etag) },
    })
    assert.equal(notModified.statusCode, 304)
    await notModified.body.dump()

    const missing = await request(`${nginx.origin}/static/nope.html`)
    assert.equal(missing.statusCode, 404)
    await missing.body.dump()

    const who = await request(`${nginx.origin}/who?x=1`)
    assert.equal(await who.body.text(), `127.0.0.1 http 127.0.0.1 /who?x=1`)
    const https = await request(`${nginx.origin}/who-https`)
    assert.equal(await https.body.text(), '127.0.0.1 https 127.0.0.1 /who')

    const go = await request(`${nginx.origin}/go`)
    assert.equal(go.statusCode, 301)
    assert.equal(go.headers.location, 'https://127.0.0.1/gone')
    await go.body.dump()

    // A CGI script's Status with a custom reason and two Set-Cookie lines survive both hops.
    const cookies = await new Promise<{ status: number; message: string; cookies: string[]; body: string }>(
      (resolve, reject) => {
        httpRequest(`${nginx.origin}/cgi-bin/cookies.sh`, (res) => {
          let body = ''
          res.on('data', (d: Buffer) => (body += d))
          res.on('end', () =>
            resolve({
              status: res.statusCode!,
              message: res.statusMessage!,
              cookies: res.headers['set-cookie'] ?? [],
              body,
            }),
          )
        })
          .on('error', reject)
          .end()
      },
    )
    assert.deepEqual(cookies, {
      status: 299,
      message: 'Custom Reason',
      cookies: ['a=1', 'b=2; Path=/'],
      body: 'cookies\n',
    })
    // An nph- script writes a raw HTTP response into its "socket": it still becomes a CGI reply.
    const nph = await request(`${nginx.origin}/cgi-bin/nph-teapot.sh`)
    assert.equal(nph.statusCode, 418)
    assert.equal(nph.headers['x-nph'], 'yes')
    assert.equal(await nph.body.text(), 'short and stout\n')

    // Many requests over nginx's kept connections: at most `keepalive` connections were opened.
    const before = gh.gatehouse.fastcgiStats()[0]!
    await many(`${nginx.origin}/who`, 200, 4, '127.0.0.1 http 127.0.0.1 /who')
    const after = gh.gatehouse.fastcgiStats()[0]!
    assert.equal(after.requests - before.requests, 200)
    assert.ok(after.connections <= 8, `${after.connections} connections for ${after.requests} requests`)
    assert.doesNotMatch(nginx.errorLog(), /\[(error|crit|alert|emerg)\]/)
  })

  test('library: createFastCGIServer(handler) behind nginx: POST, large bodies both ways, cookies, the real client', async (t) => {
    const dir = tempDir(t, 'gh-fcgi-nginx-')
    // nginx workers may run unprivileged: let them reach the socket.
    chmodSync(dir, 0o755)
    const download = randomBytes(8 * 1024 * 1024)
    const server = createFastCGIServer((req, res) => {
      if (req.url === '/download') {
        res.writeHead(200, { 'content-type': 'application/octet-stream' })
        Readable.from(
          (function* () {
            for (let off = 0; off < download.length; off += 60_000) yield download.subarray(off, off + 60_000)
          })(),
        ).pipe(res)
        return
      }
      const hash = createHash('sha256')
      let length = 0
      req.on('data', (c: Buffer) => {
        length += c.length
        hash.update(c)
      })
      req.on('end', () => {
        res.writeHead(200, { 'content-type': 'application/json', 'set-cookie': ['s=1', 't=2; HttpOnly'] })
        res.end(
          JSON.stringify({
            method: req.method,
            url: req.url,
            cookie: req.headers.cookie,
            contentLength: req.headers['content-length'],
            length,
            sha256: hash.digest('hex'),
            conn: connectionInfo(req),
          }),
        )
      })
    })
    const socketPath = join(dir, 'lib.sock')
    server.listen(socketPath)
    await once(server, 'listening')
    chmodSync(socketPath, 0o666)
    t.after(
      () =>
        new Promise<void>((resolve) => {
          server.closeAllConnections()
          server.close(() => resolve())
        }),
    )
    const nginx = await startNginx(t, dir, { http: upstream(`unix:${socketPath}`), server: PASS })

    const body = randomBytes(6 * 1024 * 1024)
    const reply = await new Promise<{
      status: number
      headers: Record<string, unknown>
      body: string
      localPort: number
    }>((resolve, reject) => {
      const req = httpRequest(
        {
          host: '127.0.0.1',
          port: nginx.port,
          method: 'POST',
          path: '/upload?q=1',
          headers: { cookie: 'a=1', 'content-length': body.length },
        },
        (res) => {
          let text = ''
          res.setEncoding('utf8')
          res.on('data', (d: string) => (text += d))
          res.on('end', () =>
            resolve({
              status: res.statusCode!,
              headers: res.headers,
              body: text,
              localPort: req.socket!.localPort!,
            }),
          )
        },
      )
      req.on('error', reject)
      req.end(body)
    })
    assert.equal(reply.status, 200)
    assert.deepEqual(reply.headers['set-cookie'], ['s=1', 't=2; HttpOnly'])
    const got = JSON.parse(reply.body)
    assert.equal(got.method, 'POST')
    assert.equal(got.url, '/upload?q=1')
    assert.equal(got.cookie, 'a=1')
    assert.equal(got.contentLength, String(body.length))
    assert.equal(got.length, body.length)
    assert.equal(got.sha256, createHash('sha256').update(body).digest('hex'))
    // REMOTE_ADDR / REMOTE_PORT are the HTTP client's, SERVER_PORT is nginx's.
    assert.equal(got.conn.remoteAddress, '127.0.0.1')
    assert.equal(got.conn.remotePort, reply.localPort)
    assert.equal(got.conn.localPort, nginx.port)

    // A chunked upload: nginx buffers it and sends CONTENT_LENGTH.
    const chunked = await request(`${nginx.origin}/chunked`, {
      method: 'PUT',
      body: Readable.from([Buffer.from('abc'), Buffer.from('def')]),
    })
    assert.equal(((await chunked.body.json()) as { length: number }).length, 6)

    const down = await request(`${nginx.origin}/download`)
    assert.equal(down.statusCode, 200)
    const bytes = Buffer.from(await down.body.arrayBuffer())
    assert.equal(bytes.length, download.length)
    assert.ok(bytes.equals(download))

    // One request after another over nginx's kept connections.
    const before = server.connectionsAccepted
    const requestsBefore = server.requestsStarted
    for (let i = 0; i < 100; i++) {
      const r = await request(`${nginx.origin}/seq`)
      assert.equal(r.statusCode, 200)
      await r.body.dump()
    }
    assert.equal(server.requestsStarted - requestsBefore, 100)
    assert.ok(server.connectionsAccepted - before <= 8, `${server.connectionsAccepted - before} connections`)
    assert.doesNotMatch(nginx.errorLog(), /\[(error|crit|alert|emerg)\]/)
  })
})
