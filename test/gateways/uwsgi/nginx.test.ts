import assert from 'node:assert/strict'
import { createHash, randomBytes } from 'node:crypto'
import { once } from 'node:events'
import { writeFileSync } from 'node:fs'
import { request as httpRequest } from 'node:http'
import { join } from 'node:path'
import { Readable } from 'node:stream'
import { after, before, describe, test } from 'node:test'
import { request } from 'undici'
import { connectionInfo } from '../../../src/http/connection.js'
import { createUwsgiServer } from '../../../src/gateways/uwsgi/server.js'
import { startGatehouse, tempDir } from '../../support/helpers.js'
import { startNginx } from '../../support/peer-nginx.js'
import { startUwsgi, type UwsgiPeer } from '../../support/peer-uwsgi.js'

/** nginx location body passing everything to a uwsgi server, with Debian's uwsgi_params. */
const passTo = (address: string) => `location / { include /etc/nginx/uwsgi_params; uwsgi_pass ${address}; }`

describe('nginx uwsgi_pass in front of Gatehouse --uwsgi-listen', () => {
  const cleanups: (() => unknown)[] = []
  const hooks = { after: (fn: () => unknown) => void cleanups.push(fn) }
  after(async () => {
    for (const fn of cleanups.reverse()) await fn()
  })
  let uwsgi: UwsgiPeer
  let dir: string

  before(async () => {
    dir = tempDir(hooks, 'gh-nginx-')
    writeFileSync(join(dir, 'page.html'), '<h1>static via uwsgi</h1>')
    uwsgi = await startUwsgi(hooks, dir)
  })

  test('static files, return routes and a uWSGI app behind Gatehouse, all through nginx', async (t) => {
    const gh = await startGatehouse(t, {
      uwsgi_listen: ['127.0.0.1:0'],
      routes: [
        { exact: '/who', return: { body: '{remote_addr} {scheme} {host} {request_uri}' } },
        { path: '/static', static: { root: dir } },
        { path: '/', max_body_bytes: '10MB', uwsgi: { pass: uwsgi.address } },
      ],
    })
    const nginx = await startNginx(t, dir, {
      http: 'client_max_body_size 10m;',
      server: `${passTo(gh.gatehouse.uwsgiAddresses()[0]!.address)}
        location = /who-https { include /etc/nginx/uwsgi_params; uwsgi_param HTTPS on; uwsgi_param REQUEST_URI /who; uwsgi_pass ${gh.gatehouse.uwsgiAddresses()[0]!.address}; }`,
    })

    const page = await request(`${nginx.origin}/static/page.html`)
    assert.equal(page.statusCode, 200)
    assert.match(String(page.headers.server), /^nginx\//)
    assert.equal(page.headers['content-type'], 'text/html; charset=utf-8')
    assert.equal(await page.body.text(), '<h1>static via uwsgi</h1>')

    const head = await request(`${nginx.origin}/static/page.html`, { method: 'HEAD' })
    assert.equal(head.statusCode, 200)
    assert.equal(head.headers['content-length'], '25')
    await head.body.dump()

    const missing = await request(`${nginx.origin}/static/nope.html`)
    assert.equal(missing.statusCode, 404)
    await missing.body.dump()

    const who = await request(`${nginx.origin}/who?x=1`)
    assert.equal(await who.body.text(), '127.0.0.1 http 127.0.0.1 /who?x=1')
    // A later uwsgi_param replaces the one from uwsgi_params, as in uWSGI.
    const https = await request(`${nginx.origin}/who-https`)
    assert.equal(await https.body.text(), '127.0.0.1 https 127.0.0.1 /who')

    const flask = await request(`${nginx.origin}/hello`)
    assert.equal(flask.statusCode, 200)
    assert.equal(await flask.body.text(), 'hello from flask')

    // POST with a body: nginx -> Gatehouse (uwsgi listener) -> Gatehouse (uwsgi client) -> uWSGI.
    const data = randomBytes(1024 * 1024)
    const upload = await request(`${nginx.origin}/upload`, { method: 'POST', body: data })
    assert.equal(upload.statusCode, 200)
    assert.deepEqual(await upload.body.json(), {
      length: data.length,
      sha256: createHash('sha256').update(data).digest('hex'),
      content_length: String(data.length),
    })

    // A chunked request body: nginx buffers it and sends CONTENT_LENGTH.
    const chunked = await request(`${nginx.origin}/upload`, {
      method: 'POST',
      body: Readable.from([Buffer.from('abc'), Buffer.from('def')]),
    })
    assert.deepEqual(((await chunked.body.json()) as { length: number }).length, 6)

    const stream = await request(`${nginx.origin}/stream?n=1000&size=100`)
    assert.equal((await stream.body.text()).length, 100_000)
  })

  test('headers near the 64 KB limit pass; past it nginx refuses to build the packet', async (t) => {
    const gh = await startGatehouse(t, {
      uwsgi_listen: ['127.0.0.1:0'],
      routes: [{ path: '/', uwsgi: { pass: uwsgi.address } }],
    })
    const nginx = await startNginx(t, dir, {
      // One header line may be up to 80k; nginx's own ceiling for a uwsgi packet is 65535.
      http: 'large_client_header_buffers 4 80k;',
      server: passTo(gh.gatehouse.uwsgiAddresses()[0]!.address),
    })
    const near = await request(`${nginx.origin}/environ`, { headers: { 'x-big': 'b'.repeat(60_000) } })
    assert.equal(near.statusCode, 200)
    assert.equal(String(((await near.body.json()) as Record<string, string>).HTTP_X_BIG).length, 60_000)

    const over = await request(`${nginx.origin}/environ`, { headers: { 'x-big': 'b'.repeat(66_000) } })
    assert.equal(over.statusCode, 500)
    await over.body.dump()
    assert.match(nginx.errorLog(), /uwsgi request is too big/)
  })

  test('a listener limited to 4 KB (uWSGI default buffer-size): nginx relays our 431 past it', async (t) => {
    const gh = await startGatehouse(t, {
      uwsgi_listen: ['127.0.0.1:0'],
      uwsgi_max_vars_bytes: 4096,
      routes: [{ path: '/', return: { body: 'fits' } }],
    })
    // nginx's default large_client_header_buffers (4 8k) already lets these through.
    const nginx = await startNginx(t, dir, { server: passTo(gh.gatehouse.uwsgiAddresses()[0]!.address) })
    const under = await request(`${nginx.origin}/`, { headers: { 'x-big': 'c'.repeat(3500) } })
    assert.equal(under.statusCode, 200)
    assert.equal(await under.body.text(), 'fits')
    const over = await request(`${nginx.origin}/`, { headers: { 'x-big': 'c'.repeat(4500) } })
    assert.equal(over.statusCode, 431)
    assert.match(await over.body.text(), /uwsgi vars block exceeds the limit/)
  })

  test('library: createUwsgiServer(handler) behind nginx sees the real client, cookies and bodies', async (t) => {
    const server = createUwsgiServer((req, res) => {
      let length = 0
      req.on('data', (c: Buffer) => (length += c.length))
      req.on('end', () => {
        res.writeHead(200, { 'content-type': 'application/json', 'set-cookie': ['s=1', 't=2'] })
        res.end(
          JSON.stringify({
            method: req.method,
            url: req.url,
            cookie: req.headers.cookie,
            length,
            conn: connectionInfo(req),
          }),
        )
      })
    })
    server.listen(join(dir, 'lib.sock'))
    await once(server, 'listening')
    t.after(() => new Promise<void>((resolve) => server.close(() => resolve())))
    const nginx = await startNginx(t, dir, { server: passTo(`unix:${join(dir, 'lib.sock')}`) })

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
          method: 'PUT',
          path: '/p?q=1',
          headers: { cookie: 'a=1', 'content-length': 5 },
        },
        (res) => {
          let body = ''
          res.setEncoding('utf8')
          res.on('data', (d: string) => (body += d))
          res.on('end', () =>
            resolve({
              status: res.statusCode!,
              headers: res.headers,
              body,
              localPort: req.socket!.localPort!,
            }),
          )
        },
      )
      req.on('error', reject)
      req.end('hello')
    })
    assert.equal(reply.status, 200)
    assert.deepEqual(reply.headers['set-cookie'], ['s=1', 't=2'])
    const got = JSON.parse(reply.body)
    assert.equal(got.method, 'PUT')
    assert.equal(got.url, '/p?q=1')
    assert.equal(got.cookie, 'a=1')
    assert.equal(got.length, 5)
    // REMOTE_ADDR / REMOTE_PORT are the HTTP client's, SERVER_PORT is nginx's.
    assert.equal(got.conn.remoteAddress, '127.0.0.1')
    assert.equal(got.conn.remotePort, reply.localPort)
    assert.equal(got.conn.localPort, nginx.port)
  })
})
