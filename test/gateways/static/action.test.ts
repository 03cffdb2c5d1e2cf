import assert from 'node:assert/strict'
import { mkdirSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs'
import { connect } from 'node:net'
import { join } from 'node:path'
import { describe, test } from 'node:test'
import { request } from 'undici'
import type { GatehouseConfigInput } from '../../../src/config.js'
import { rawRequest, startGatehouse, tempDir } from '../../support/helpers.js'

type TestContext = Parameters<typeof tempDir>[0] & Parameters<typeof startGatehouse>[0]
type StaticInput = NonNullable<NonNullable<GatehouseConfigInput['routes']>[number]['static']>

const MTIME = new Date('2021-06-01T12:00:00Z')
const DIGITS = '0123456789abcdefghij'
const BIG_SIZE = 5 * 1024 * 1024

/** 5 MiB whose every 4-byte word is its own offset: any misplaced byte shows. */
function bigContent(): Buffer {
  const buf = Buffer.alloc(BIG_SIZE)
  for (let i = 0; i < BIG_SIZE; i += 4) buf.writeUInt32BE(i, i)
  return buf
}

/**
 * A document root and, beside it, a directory the root must never leak:
 *   <base>/root/...   served
 *   <base>/outside/secret.txt
 */
function makeTree(t: TestContext): { root: string; outside: string } {
  const base = tempDir(t, 'gh-static-')
  const root = join(base, 'root')
  const outside = join(base, 'outside')
  const files: Record<string, string | Buffer> = {
    'index.html': '<h1>home</h1>\n',
    'hello.txt': 'hello world\n',
    'data.json': '{"a":1}\n',
    'style.css': 'body{}\n',
    'image.png': Buffer.from([0x89, 0x50, 0x4e, 0x47]),
    'blob.zzz': 'opaque',
    'digits.txt': DIGITS,
    'empty.txt': '',
    'app.js': 'console.log("identity")\n',
    'app.js.br': 'BROTLI-BYTES',
    'app.js.gz': 'GZIP-BYTES-LONGER',
    'only-gz.css': 'plain css',
    'only-gz.css.gz': 'GZ css',
    'sub/index.html': '<h1>sub</h1>\n',
    'sub/page.txt': 'sub page\n',
    'bare/<b>&"x\'.txt': 'x',
    'bare/plain.txt': 'p',
    'bare/.secret': 's',
    'bare/inner/file.txt': 'f',
    '.env': 'SECRET=1\n',
    '.hidden/x.txt': 'hidden\n',
    '.well-known/security.txt': 'Contact: mailto:security@example.org\n',
    '.well-known/.private': 'no\n',
  }
  for (const [name, content] of Object.entries(files)) {
    const path = join(root, name)
    mkdirSync(join(path, '..'), { recursive: true })
    writeFileSync(path, content)
    utimesSync(path, MTIME, MTIME)
  }
  writeFileSync(join(root, 'big.bin'), bigContent())
  mkdirSync(outside)
  writeFileSync(join(outside, 'secret.txt'), 'TOP SECRET\n')
  symlinkSync('hello.txt', join(root, 'link-inside.txt'))
  symlinkSync('sub', join(root, 'linkdir'))
  symlinkSync(join(outside, 'secret.txt'), join(root, 'link-outside.txt'))
  symlinkSync(outside, join(root, 'linkdir-outside'))
  return { root, outside }
}

async function serve(t: TestContext, root: string, options: Partial<StaticInput> = {}, path = '/') {
  return startGatehouse(t, { routes: [{ path, static: { root, ...options } }] })
}

interface Reply {
  status: number
  headers: Record<string, string | string[] | undefined>
  body: Buffer
}

async function get(
  origin: string,
  path: string,
  headers: Record<string, string> = {},
  method: 'GET' | 'HEAD' | 'POST' = 'GET',
): Promise<Reply> {
  const res = await request(`${origin}${path}`, { method, headers })
  const body = Buffer.from(await res.body.arrayBuffer())
  return { status: res.statusCode, headers: res.headers, body }
}

/** For targets a client library would normalize (`..`, `%2e`): one request on a raw socket. */
async function rawGet(port: number, target: string, method = 'GET') {
  const res = await rawRequest(
    port,
    `${method} ${target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n`,
  )
  const split = res.text.indexOf('\r\n\r\n')
  const head = split === -1 ? res.text : res.text.slice(0, split)
  const headers: Record<string, string> = {}
  for (const line of head.split('\r\n').slice(1)) {
    const colon = line.indexOf(':')
    headers[line.slice(0, colon).toLowerCase()] = line.slice(colon + 1).trim()
  }
  return { status: res.status, headers, body: split === -1 ? '' : res.text.slice(split + 4) }
}

describe('static: content types and validators', () => {
  test('text types carry charset=utf-8, others none, unknown is octet-stream', async (t) => {
    const { root } = makeTree(t)
    const { origin } = await serve(t, root)
    const cases: [string, string][] = [
      ['/hello.txt', 'text/plain; charset=utf-8'],
      ['/index.html', 'text/html; charset=utf-8'],
      ['/data.json', 'application/json; charset=utf-8'],
      ['/style.css', 'text/css; charset=utf-8'],
      ['/app.js', 'text/javascript; charset=utf-8'],
      ['/image.png', 'image/png'],
      ['/blob.zzz', 'application/octet-stream'],
    ]
    for (const [path, type] of cases) {
      const res = await get(origin, path)
      assert.equal(res.status, 200, path)
      assert.equal(res.headers['content-type'], type, path)
    }
    const hello = await get(origin, '/hello.txt')
    assert.equal(hello.body.toString(), 'hello world\n')
    assert.equal(hello.headers['content-length'], '12')
    assert.equal(hello.headers['accept-ranges'], 'bytes')
  })

  test('ETag and Last-Modified follow the file', async (t) => {
    const { root } = makeTree(t)
    const { origin } = await serve(t, root)
    const a = await get(origin, '/hello.txt')
    const b = await get(origin, '/digits.txt')
    assert.match(String(a.headers.etag), /^"[^"]+"$/, 'a strong ETag')
    assert.notEqual(a.headers.etag, b.headers.etag)
    assert.equal(a.headers['last-modified'], MTIME.toUTCString())
    assert.equal((await get(origin, '/hello.txt')).headers.etag, a.headers.etag, 'stable across requests')
  })

  test('an empty file is a 200 with Content-Length 0', async (t) => {
    const { root } = makeTree(t)
    const { origin } = await serve(t, root)
    const res = await get(origin, '/empty.txt')
    assert.equal(res.status, 200)
    assert.equal(res.headers['content-length'], '0')
    assert.equal(res.body.length, 0)
  })

  test('cache_control is sent when configured', async (t) => {
    const { root } = makeTree(t)
    const { origin } = await serve(t, root, { cache_control: 'public, max-age=60' })
    assert.equal((await get(origin, '/hello.txt')).headers['cache-control'], 'public, max-age=60')
  })
})

describe('static: conditional requests', () => {
  test('If-None-Match: exact, weak W/ form, in a list, and * give 304 without a body', async (t) => {
    const { root } = makeTree(t)
    const { origin } = await serve(t, root)
    const etag = String((await get(origin, '/hello.txt')).headers.etag)
    for (const inm of [etag, `W/${etag}`, `"nope", ${etag}`, `"a","b",W/${etag}`, '*']) {
      const res = await get(origin, '/hello.txt', { 'if-none-match': inm })
      assert.equal(res.status, 304, inm)
      assert.equal(res.body.length, 0, inm)
      assert.equal(res.headers.etag, etag, inm)
    }
    const miss = await get(origin, '/hello.txt', { 'if-none-match': '"nope", W/"other"' })
    assert.equal(miss.status, 200)
    assert.equal(miss.body.toString(), 'hello world\n')
  })

  test('If-Modified-Since: 304 at or after Last-Modified, 200 before it', async (t) => {
    const { root } = makeTree(t)
    const { origin } = await serve(t, root)
    const lm = MTIME.toUTCString()
    assert.equal((await get(origin, '/hello.txt', { 'if-modified-since': lm })).status, 304)
    const later = new Date(MTIME.getTime() + 86_400_000).toUTCString()
    assert.equal((await get(origin, '/hello.txt', { 'if-modified-since': later })).status, 304)
    const earlier = new Date(MTIME.getTime() - 1000).toUTCString()
    assert.equal((await get(origin, '/hello.txt', { 'if-modified-since': earlier })).status, 200)
  })

  test('If-None-Match takes precedence over If-Modified-Since (RFC 9110 13.2.2)', async (t) => {
    const { root } = makeTree(t)
    const { origin } = await serve(t, root)
    const etag = String((await get(origin, '/hello.txt')).headers.etag)
    const lm = MTIME.toUTCString()
    const stale = await get(origin, '/hello.txt', { 'if-none-match': '"other"', 'if-modified-since': lm })
    assert.equal(stale.status, 200, 'a non-matching ETag wins over a fresh date')
    const old = new Date(0).toUTCString()
    const fresh = await get(origin, '/hello.txt', { 'if-none-match': etag, 'if-modified-since': old })
    assert.equal(fresh.status, 304, 'a matching ETag wins over a stale date')
  })

  test('If-Match: 412 on mismatch or a weak tag, 200 on a match or *', async (t) => {
    const { root } = makeTree(t)
    const { origin } = await serve(t, root)
    const etag = String((await get(origin, '/hello.txt')).headers.etag)
    assert.equal((await get(origin, '/hello.txt', { 'if-match': '"other"' })).status, 412)
    assert.equal((await get(origin, '/hello.txt', { 'if-match': `W/${etag}` })).status, 412)
    assert.equal((await get(origin, '/hello.txt', { 'if-match': etag })).status, 200)
    assert.equal((await get(origin, '/hello.txt', { 'if-match': `"x", ${etag}` })).status, 200)
    assert.equal((await get(origin, '/hello.txt', { 'if-match': '*' })).status, 200)
  })

  test('If-Unmodified-Since before the file changed: 412', async (t) => {
    const { root } = makeTree(t)
    const { origin } = await serve(t, root)
    const before = new Date(MTIME.getTime() - 60_000).toUTCString()
    assert.equal((await get(origin, '/hello.txt', { 'if-unmodified-since': before })).status, 412)
    const lm = MTIME.toUTCString()
    assert.equal((await get(origin, '/hello.txt', { 'if-unmodified-since': lm })).status, 200)
  })
})

describe('static: ranges', () => {
  test('bytes=0-9, suffix bytes=-5 and open bytes=10- give 206 with Content-Range', async (t) => {
    const { root } = makeTree(t)
    const { origin } = await serve(t, root)
    const cases: [string, string, string][] = [
      ['bytes=0-9', 'bytes 0-9/20', '0123456789'],
      ['bytes=-5', 'bytes 15-19/20', 'fghij'],
      ['bytes=10-', 'bytes 10-19/20', 'abcdefghij'],
      ['bytes=5-5', 'bytes 5-5/20', '5'],
      ['bytes=15-100', 'bytes 15-19/20', 'fghij'],
    ]
    for (const [range, contentRange, body] of cases) {
      const res = await get(origin, '/digits.txt', { range })
      assert.equal(res.status, 206, range)
      assert.equal(res.headers['content-range'], contentRange, range)
      assert.equal(res.headers['content-length'], String(body.length), range)
      assert.equal(res.body.toString(), body, range)
    }
  })

  test('an unsatisfiable range is 416 with Content-Range: bytes */SIZE', async (t) => {
    const { root } = makeTree(t)
    const { origin } = await serve(t, root)
    for (const range of ['bytes=20-', 'bytes=100-200']) {
      const res = await get(origin, '/digits.txt', { range })
      assert.equal(res.status, 416, range)
      assert.equal(res.headers['content-range'], 'bytes */20', range)
    }
  })

  test('several ranges, or a malformed one, get the whole file with 200', async (t) => {
    const { root } = makeTree(t)
    const { origin } = await serve(t, root)
    for (const range of ['bytes=0-1,5-6', 'bytes=0-1, -2', 'bytes=x-y', 'lines=1-2']) {
      const res = await get(origin, '/digits.txt', { range })
      assert.equal(res.status, 200, range)
      assert.equal(res.headers['content-range'], undefined, range)
      assert.equal(res.body.toString(), DIGITS, range)
    }
  })

  test('If-Range: the current strong ETag or Last-Modified allows the range, anything else gets 200', async (t) => {
    const { root } = makeTree(t)
    const { origin } = await serve(t, root)
    const etag = String((await get(origin, '/digits.txt')).headers.etag)
    const range = 'bytes=0-3'
    const ok = [etag, MTIME.toUTCString()]
    for (const ifRange of ok) {
      const res = await get(origin, '/digits.txt', { range, 'if-range': ifRange })
      assert.equal(res.status, 206, ifRange)
      assert.equal(res.body.toString(), '0123', ifRange)
    }
    const stale = ['"other"', `W/${etag}`, new Date(MTIME.getTime() - 60_000).toUTCString(), 'garbage']
    for (const ifRange of stale) {
      const res = await get(origin, '/digits.txt', { range, 'if-range': ifRange })
      assert.equal(res.status, 200, ifRange)
      assert.equal(res.body.toString(), DIGITS, ifRange)
    }
  })

  test('Range is ignored on HEAD', async (t) => {
    const { root } = makeTree(t)
    const { origin } = await serve(t, root)
    const res = await get(origin, '/digits.txt', { range: 'bytes=0-3' }, 'HEAD')
    assert.equal(res.status, 200)
    assert.equal(res.headers['content-length'], '20')
  })
})

describe('static: methods', () => {
  test('HEAD has the GET headers and no body on the wire', async (t) => {
    const { root } = makeTree(t)
    const { port, origin } = await serve(t, root)
    const full = await get(origin, '/hello.txt')
    const head = await rawGet(port, '/hello.txt', 'HEAD')
    assert.equal(head.status, 200)
    assert.equal(head.headers['content-length'], '12')
    assert.equal(head.headers['content-type'], 'text/plain; charset=utf-8')
    assert.equal(head.headers.etag, full.headers.etag)
    assert.equal(head.headers['last-modified'], full.headers['last-modified'])
    assert.equal(head.body, '')
    const big = await rawGet(port, '/big.bin', 'HEAD')
    assert.equal(big.headers['content-length'], String(BIG_SIZE))
    assert.equal(big.body, '')
  })

  test('POST is 405 with Allow', async (t) => {
    const { root } = makeTree(t)
    const { origin } = await serve(t, root)
    const res = await get(origin, '/hello.txt', {}, 'POST')
    assert.equal(res.status, 405)
    assert.deepEqual(
      String(res.headers.allow)
        .split(',')
        .map((m) => m.trim())
        .sort(),
      ['GET', 'HEAD'],
    )
  })
})

describe('static: directories', () => {
  test('index.html is served for a directory', async (t) => {
    const { root } = makeTree(t)
    const { origin } = await serve(t, root)
    const top = await get(origin, '/')
    assert.equal(top.status, 200)
    assert.equal(top.body.toString(), '<h1>home</h1>\n')
    assert.equal(top.headers['content-type'], 'text/html; charset=utf-8')
    assert.equal((await get(origin, '/sub/')).body.toString(), '<h1>sub</h1>\n')
  })

  test('a configured index list is tried in order', async (t) => {
    const { root } = makeTree(t)
    const { origin } = await serve(t, root, { index: ['missing.html', 'page.txt'] })
    const res = await get(origin, '/sub/')
    assert.equal(res.status, 200)
    assert.equal(res.body.toString(), 'sub page\n')
  })

  test('a directory without trailing slash is a 301 to the slash form, query kept', async (t) => {
    const { root } = makeTree(t)
    const { port, origin } = await serve(t, root)
    const res = await get(origin, '/sub')
    assert.equal(res.status, 301)
    assert.equal(res.headers.location, '/sub/')
    const q = await get(origin, '/sub?a=1&b=%20')
    assert.equal(q.status, 301)
    assert.equal(q.headers.location, '/sub/?a=1&b=%20')
    const head = await rawGet(port, '/sub', 'HEAD')
    assert.equal(head.status, 301)
    assert.equal(head.body, '')
  })

  test('the redirect never points at another host (a leading "//" is protocol-relative)', async (t) => {
    const { root } = makeTree(t)
    const { port } = await serve(t, root)
    for (const target of ['//sub', '//evil.example/..//sub', '///sub', '//evil.example/%2e%2e/sub']) {
      const res = await rawGet(port, target)
      assert.equal(res.status, 301, target)
      const location = res.headers.location ?? ''
      assert.ok(location.startsWith('/') && !location.startsWith('//'), `${target} -> ${location}`)
      assert.equal(new URL(location, 'http://localhost/').host, 'localhost', `${target} -> ${location}`)
      assert.equal(new URL(location, 'http://localhost/').pathname, '/sub/', `${target} -> ${location}`)
    }
  })

  test('a route prefix that names a directory redirects to the slash form under the prefix', async (t) => {
    const { root } = makeTree(t)
    const { origin } = await serve(t, root, {}, '/static')
    const bare = await get(origin, '/static')
    assert.equal(bare.status, 301)
    assert.equal(bare.headers.location, '/static/')
    assert.equal((await get(origin, '/static/')).body.toString(), '<h1>home</h1>\n')
    assert.equal((await get(origin, '/static/sub/page.txt')).body.toString(), 'sub page\n')
    assert.equal((await get(origin, '/hello.txt')).status, 404)
  })

  test('a directory without an index is 403 when listing is off', async (t) => {
    const { root } = makeTree(t)
    const { origin } = await serve(t, root)
    assert.equal((await get(origin, '/bare/')).status, 403)
  })

  test('listing = true: an HTML listing with names escaped, dotfiles left out', async (t) => {
    const { root } = makeTree(t)
    const { origin } = await serve(t, root, { listing: true })
    const res = await get(origin, '/bare/')
    assert.equal(res.status, 200)
    assert.equal(res.headers['content-type'], 'text/html; charset=utf-8')
    const html = res.body.toString()
    assert.ok(!html.includes('<b>'), 'a raw <b> from a file name would be markup')
    assert.ok(html.includes('&lt;b&gt;&amp;&quot;x&#39;.txt'), html)
    assert.ok(
      html.includes('href="%3Cb%3E%26%22x\'.txt"') || html.includes('href="%3Cb%3E%26%22x&#39;.txt"'),
      html,
    )
    assert.ok(html.includes('href="plain.txt"'), html)
    assert.ok(html.includes('href="inner/"'), html)
    assert.ok(html.includes('href="../"'), html)
    assert.ok(!html.includes('.secret'), html)
  })
})

describe('static: precompressed siblings', () => {
  test('br or gzip chosen by Accept-Encoding and q-values, with Vary and its own ETag', async (t) => {
    const { root } = makeTree(t)
    const { origin } = await serve(t, root)
    const plain = await get(origin, '/app.js')
    assert.equal(plain.headers['content-encoding'], undefined)
    assert.equal(plain.headers.vary, 'Accept-Encoding', 'the identity response varies too')
    assert.equal(plain.body.toString(), 'console.log("identity")\n')
    const cases: [string, string | undefined, string][] = [
      ['br', 'br', 'BROTLI-BYTES'],
      ['gzip', 'gzip', 'GZIP-BYTES-LONGER'],
      ['gzip, deflate, br', 'gzip', 'GZIP-BYTES-LONGER'],
      ['br;q=0, gzip', 'gzip', 'GZIP-BYTES-LONGER'],
      ['gzip;q=0.5, br;q=0.8', 'br', 'BROTLI-BYTES'],
      ['br;q=0', undefined, 'console.log("identity")\n'],
      ['br;q=0, gzip;q=0', undefined, 'console.log("identity")\n'],
      ['identity', undefined, 'console.log("identity")\n'],
      ['deflate', undefined, 'console.log("identity")\n'],
      ['*', 'br', 'BROTLI-BYTES'],
    ]
    for (const [accept, encoding, body] of cases) {
      const res = await get(origin, '/app.js', { 'accept-encoding': accept })
      assert.equal(res.status, 200, accept)
      assert.equal(res.headers['content-encoding'], encoding, accept)
      assert.equal(res.body.toString(), body, accept)
      assert.equal(res.headers['content-length'], String(body.length), accept)
      assert.equal(res.headers['content-type'], 'text/javascript; charset=utf-8', accept)
      assert.equal(res.headers.vary, 'Accept-Encoding', accept)
    }
    const br = await get(origin, '/app.js', { 'accept-encoding': 'br' })
    const gz = await get(origin, '/app.js', { 'accept-encoding': 'gzip' })
    const etags = new Set([plain.headers.etag, br.headers.etag, gz.headers.etag])
    assert.equal(etags.size, 3, 'each representation has its own ETag')
  })

  test('a conditional request validates against the chosen representation', async (t) => {
    const { root } = makeTree(t)
    const { origin } = await serve(t, root)
    const br = await get(origin, '/app.js', { 'accept-encoding': 'br' })
    const etag = String(br.headers.etag)
    const again = await get(origin, '/app.js', { 'accept-encoding': 'br', 'if-none-match': etag })
    assert.equal(again.status, 304)
    const identity = await get(origin, '/app.js', { 'if-none-match': etag })
    assert.equal(identity.status, 200, 'the br ETag does not validate the identity body')
  })

  test('a rebuilt sibling gets a new ETag even when the original file is unchanged', async (t) => {
    const { root } = makeTree(t)
    const { origin } = await serve(t, root, { cache_ttl: 0 })
    const before = await get(origin, '/app.js', { 'accept-encoding': 'br' })
    writeFileSync(join(root, 'app.js.br'), 'BROTLI-BYTES-REBUILT')
    utimesSync(join(root, 'app.js.br'), new Date(), new Date(Date.now() + 5000))
    const after = await get(origin, '/app.js', { 'accept-encoding': 'br' })
    assert.equal(after.body.toString(), 'BROTLI-BYTES-REBUILT')
    assert.notEqual(after.headers.etag, before.headers.etag)
    const stale = await get(origin, '/app.js', {
      'accept-encoding': 'br',
      'if-none-match': String(before.headers.etag),
    })
    assert.equal(stale.status, 200, 'the old ETag no longer validates')
  })

  test('only the siblings that exist are offered; precompressed = false ignores them', async (t) => {
    const { root } = makeTree(t)
    const { origin } = await serve(t, root)
    const res = await get(origin, '/only-gz.css', { 'accept-encoding': 'br, gzip' })
    assert.equal(res.headers['content-encoding'], 'gzip')
    assert.equal(res.body.toString(), 'GZ css')
    assert.equal((await get(origin, '/hello.txt', { 'accept-encoding': 'br' })).headers.vary, undefined)

    const { origin: off } = await serve(t, root, { precompressed: false })
    const none = await get(off, '/app.js', { 'accept-encoding': 'br, gzip' })
    assert.equal(none.headers['content-encoding'], undefined)
    assert.equal(none.body.toString(), 'console.log("identity")\n')
  })

  test('a Range request is answered from the identity file', async (t) => {
    const { root } = makeTree(t)
    const { origin } = await serve(t, root)
    const res = await get(origin, '/app.js', { 'accept-encoding': 'br', range: 'bytes=0-6' })
    assert.equal(res.status, 206)
    assert.equal(res.headers['content-encoding'], undefined)
    assert.equal(res.body.toString(), 'console')
  })
})

describe('static: no escape from the root', () => {
  test('dot-dot in any spelling, encoded slashes that climb, and NUL are refused', async (t) => {
    const { root } = makeTree(t)
    const { port } = await serve(t, root)
    const targets = [
      '/../outside/secret.txt',
      '/sub/../../outside/secret.txt',
      '/%2e%2e/outside/secret.txt',
      '/%2E%2E/outside/secret.txt',
      '/.%2e/outside/secret.txt',
      '/..%2foutside%2fsecret.txt',
      '/sub%2f..%2f..%2foutside%2fsecret.txt',
      '/sub/%2e%2e%2f%2e%2e%2foutside/secret.txt',
      '/hello.txt%00.png',
      '/%00',
      '/sub/%00/../hello.txt',
    ]
    for (const target of targets) {
      const res = await rawGet(port, target)
      assert.ok(res.status === 400 || res.status === 404, `${target}: ${res.status}`)
      assert.ok(!res.body.includes('TOP SECRET'), target)
    }
  })

  test('dot-segments that stay inside the root resolve; %2F is a slash, as in nginx', async (t) => {
    const { root } = makeTree(t)
    const { port } = await serve(t, root)
    assert.equal((await rawGet(port, '/sub/../hello.txt')).body, 'hello world\n')
    assert.equal((await rawGet(port, '/sub/%2e%2e/hello.txt')).body, 'hello world\n')
    assert.equal((await rawGet(port, '/sub%2Fpage.txt')).body, 'sub page\n')
  })

  test('default symlinks = "inside_root": links inside are served, links leaving the root are 404', async (t) => {
    const { root } = makeTree(t)
    const { origin } = await serve(t, root)
    const inside = await get(origin, '/link-inside.txt')
    assert.equal(inside.status, 200)
    assert.equal(inside.body.toString(), 'hello world\n')
    assert.equal((await get(origin, '/linkdir/page.txt')).body.toString(), 'sub page\n')
    assert.equal((await get(origin, '/linkdir/')).body.toString(), '<h1>sub</h1>\n')
    for (const path of [
      '/link-outside.txt',
      '/linkdir-outside/secret.txt',
      '/linkdir-outside/',
      '/linkdir-outside',
    ]) {
      const res = await get(origin, path)
      assert.equal(res.status, 404, path)
      assert.ok(!res.body.toString().includes('TOP SECRET'), path)
    }
  })

  test('symlinks = "follow" serves links that leave the root', async (t) => {
    const { root } = makeTree(t)
    const { origin } = await serve(t, root, { symlinks: 'follow' })
    assert.equal((await get(origin, '/link-outside.txt')).body.toString(), 'TOP SECRET\n')
    assert.equal((await get(origin, '/linkdir-outside/secret.txt')).body.toString(), 'TOP SECRET\n')
    assert.equal((await get(origin, '/hello.txt')).body.toString(), 'hello world\n')
  })

  test('symlinks = "refuse": every link is 404, plain files and directories are served', async (t) => {
    const { root } = makeTree(t)
    const { origin } = await serve(t, root, { symlinks: 'refuse' })
    for (const path of ['/link-inside.txt', '/linkdir/page.txt', '/linkdir/', '/link-outside.txt']) {
      assert.equal((await get(origin, path)).status, 404, path)
    }
    assert.equal((await get(origin, '/hello.txt')).body.toString(), 'hello world\n')
    assert.equal((await get(origin, '/sub/page.txt')).body.toString(), 'sub page\n')
    assert.equal((await get(origin, '/')).body.toString(), '<h1>home</h1>\n')
    assert.equal((await get(origin, '/sub/')).body.toString(), '<h1>sub</h1>\n')
    assert.equal((await get(origin, '/sub')).status, 301)
  })

  test('a root that is itself a symlink works in every mode', async (t) => {
    const { root } = makeTree(t)
    const alias = join(root, '..', 'root-alias')
    symlinkSync(root, alias)
    for (const symlinks of ['inside_root', 'follow', 'refuse'] as const) {
      const { origin } = await serve(t, alias, { symlinks })
      assert.equal((await get(origin, '/hello.txt')).body.toString(), 'hello world\n', symlinks)
      assert.equal((await get(origin, '/')).body.toString(), '<h1>home</h1>\n', symlinks)
    }
  })

  test('dotfiles are denied by default, /.well-known/ excepted; dotfiles = "allow" serves them', async (t) => {
    const { root } = makeTree(t)
    const { port, origin } = await serve(t, root)
    for (const path of ['/.env', '/.hidden/x.txt', '/.hidden/', '/.well-known/.private']) {
      assert.equal((await get(origin, path)).status, 404, path)
    }
    assert.equal((await rawGet(port, '/%2eenv')).status, 404)
    assert.equal((await rawGet(port, '/sub/..%2f.env')).status, 404)
    const wk = await get(origin, '/.well-known/security.txt')
    assert.equal(wk.status, 200)
    assert.equal(wk.body.toString(), 'Contact: mailto:security@example.org\n')

    const { origin: allow } = await serve(t, root, { dotfiles: 'allow' })
    assert.equal((await get(allow, '/.env')).body.toString(), 'SECRET=1\n')
    assert.equal((await get(allow, '/.hidden/x.txt')).body.toString(), 'hidden\n')
  })

  test('a file is not a directory: a trailing slash after a file name is 404', async (t) => {
    const { root } = makeTree(t)
    const { origin } = await serve(t, root)
    assert.equal((await get(origin, '/hello.txt/')).status, 404)
    assert.equal((await get(origin, '/hello.txt/x')).status, 404)
    assert.equal((await get(origin, '/nope.txt')).status, 404)
  })
})

describe('static: large files and the cache', () => {
  test('a 5 MiB file (over the cache limit) streams whole and in ranges', async (t) => {
    const { root } = makeTree(t)
    const { origin } = await serve(t, root)
    const expected = bigContent()
    const full = await get(origin, '/big.bin')
    assert.equal(full.status, 200)
    assert.equal(full.headers['content-length'], String(BIG_SIZE))
    assert.equal(full.headers['content-type'], 'application/octet-stream')
    assert.ok(full.body.equals(expected), 'the streamed body equals the file')

    const start = 3 * 1024 * 1024 + 3
    const part = await get(origin, '/big.bin', { range: `bytes=${start}-${start + 200_000}` })
    assert.equal(part.status, 206)
    assert.equal(part.headers['content-range'], `bytes ${start}-${start + 200_000}/${BIG_SIZE}`)
    assert.ok(part.body.equals(expected.subarray(start, start + 200_001)))

    const tail = await get(origin, '/big.bin', { range: 'bytes=-7' })
    assert.ok(tail.body.equals(expected.subarray(BIG_SIZE - 7)))
  })

  test('cache_ttl = 0: a file changed on disk is served new at once', async (t) => {
    const { root } = makeTree(t)
    const { origin } = await serve(t, root, { cache_ttl: 0 })
    const before = await get(origin, '/hello.txt')
    writeFileSync(join(root, 'hello.txt'), 'changed content\n')
    const after = await get(origin, '/hello.txt')
    assert.equal(after.body.toString(), 'changed content\n')
    assert.notEqual(after.headers.etag, before.headers.etag)
    const revalidated = await get(origin, '/hello.txt', { 'if-none-match': String(before.headers.etag) })
    assert.equal(revalidated.status, 200, 'the old ETag no longer matches')
  })

  test('a small cache_ttl: the change is picked up once the ttl has passed', async (t) => {
    const { root } = makeTree(t)
    const { origin } = await serve(t, root, { cache_ttl: '100ms' })
    assert.equal((await get(origin, '/hello.txt')).body.toString(), 'hello world\n')
    writeFileSync(join(root, 'hello.txt'), 'hello again, longer\n')
    // Same size, new mtime only: the cached body must not be reused.
    writeFileSync(join(root, 'digits.txt'), DIGITS.toUpperCase())
    const deadline = Date.now() + 10_000
    let body = ''
    let digits = ''
    while (Date.now() < deadline) {
      body = (await get(origin, '/hello.txt')).body.toString()
      digits = (await get(origin, '/digits.txt')).body.toString()
      if (body !== 'hello world\n' && digits !== DIGITS) break
      await new Promise((r) => setTimeout(r, 50))
    }
    assert.equal(body, 'hello again, longer\n')
    assert.equal(digits, DIGITS.toUpperCase())
  })

  test('a file that appears after a 404 is found once the ttl has passed', async (t) => {
    const { root } = makeTree(t)
    const { origin } = await serve(t, root, { cache_ttl: '100ms' })
    assert.equal((await get(origin, '/late.txt')).status, 404)
    writeFileSync(join(root, 'late.txt'), 'late\n')
    const deadline = Date.now() + 10_000
    let status = 404
    while (status === 404 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 50))
      status = (await get(origin, '/late.txt')).status
    }
    assert.equal(status, 200)
  })
})

describe('static: connection reuse', () => {
  test('error and file responses keep the connection usable', async (t) => {
    const { root } = makeTree(t)
    const { port } = await serve(t, root)
    const socket = connect(port, '127.0.0.1')
    t.after(() => socket.destroy())
    const chunks: Buffer[] = []
    socket.on('data', (c: Buffer) => chunks.push(c))
    const ended = new Promise<void>((resolve) => socket.on('close', () => resolve()))
    socket.write(
      'GET /nope HTTP/1.1\r\nHost: x\r\n\r\n' +
        'GET /bare/ HTTP/1.1\r\nHost: x\r\n\r\n' +
        'GET /hello.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n',
    )
    await ended
    const text = Buffer.concat(chunks).toString('latin1')
    const statuses = [...text.matchAll(/^HTTP\/1\.1 (\d{3})/gm)].map((m) => m[1])
    assert.deepEqual(statuses, ['404', '403', '200'])
    assert.ok(text.endsWith('hello world\n'))
  })
})
