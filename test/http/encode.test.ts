/*
 * Compression on the fly (`encode`, issue 17): responses of every kind of action are coded as
 * the client's Accept-Encoding asks, read back with curl (--compressed) and node:zlib; and
 * what must never be coded (ranges, HEAD, small, already coded, images, no-transform, q=0)
 * is sent as it is.
 */
import assert from 'node:assert/strict'
import { execFile, spawn } from 'node:child_process'
import { rmSync, writeFileSync } from 'node:fs'
import { request, type IncomingHttpHeaders } from 'node:http'
import { join } from 'node:path'
import { test, type TestContext } from 'node:test'
import { promisify } from 'node:util'
import { brotliDecompressSync, createBrotliDecompress, createGunzip, gunzipSync } from 'node:zlib'
import { ZSTD_AVAILABLE } from '../../src/http/encode.js'
import {
  CLI,
  eventually,
  FIXTURES,
  listeningAddress,
  PYTHON,
  startGatehouse,
  stopServe,
  tempDir,
} from '../support/helpers.js'

const ENCODE = join(FIXTURES, 'encode')
const run = promisify(execFile)

interface Reply {
  status: number
  headers: IncomingHttpHeaders
  /** The body as it came over the wire (still coded). */
  raw: Buffer
}

/** One request with node:http, which leaves the body as sent. */
function get(origin: string, path: string, headers: Record<string, string> = {}, method = 'GET') {
  return new Promise<Reply>((resolve, reject) => {
    const req = request(`${origin}${path}`, { method, headers, agent: false }, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('end', () =>
        resolve({ status: res.statusCode!, headers: res.headers, raw: Buffer.concat(chunks) }),
      )
      res.on('error', reject)
    })
    req.on('error', reject)
    req.end()
  })
}

/** curl's view: status line and headers, and the body curl decoded (--compressed). */
async function curl(url: string, ...args: string[]): Promise<{ head: string; body: string }> {
  const { stdout } = await run('curl', ['-sS', '-i', '--max-time', '30', ...args, url], {
    maxBuffer: 16 * 1024 * 1024,
  })
  const at = stdout.indexOf('\r\n\r\n')
  return { head: stdout.slice(0, at).toLowerCase(), body: stdout.slice(at + 4) }
}

const varies = (r: Reply) => /(^|,)\s*accept-encoding\s*(,|$)/i.test(String(r.headers.vary ?? ''))

function decode(r: Reply): string {
  const coding = r.headers['content-encoding']
  if (coding === 'gzip') return gunzipSync(r.raw).toString()
  if (coding === 'br') return brotliDecompressSync(r.raw).toString()
  assert.equal(coding, undefined, `unexpected coding ${coding}`)
  return r.raw.toString()
}

const PAGE = '<!doctype html><p>' + 'compressible static text, '.repeat(800) + '</p>\n'

async function staticServer(t: TestContext) {
  const root = tempDir(t, 'gh-encode-')
  writeFileSync(join(root, 'page.html'), PAGE)
  writeFileSync(join(root, 'tiny.txt'), 'tiny\n')
  writeFileSync(
    join(root, 'image.png'),
    Buffer.concat([Buffer.from('\x89PNG\r\n\x1a\n', 'latin1'), Buffer.alloc(8000)]),
  )
  const running = await startGatehouse(t, {
    encode: true,
    routes: [
      { exact: '/plain', encode: false, return: { body: PAGE } },
      { exact: '/returned', return: { body: PAGE, content_type: 'application/json' } },
      { path: '/', static: { root } },
    ],
  })
  return running.origin
}

test('static: gzip and br as asked, ETag weak, no Content-Length, Vary; curl --compressed reads it', async (t) => {
  const origin = await staticServer(t)
  const plain = await get(origin, '/page.html')
  assert.equal(plain.headers['content-encoding'], undefined)
  assert.ok(varies(plain), 'an identity answer to a client without Accept-Encoding still varies')
  assert.equal(plain.headers['content-length'], String(Buffer.byteLength(PAGE)))
  const etag = plain.headers.etag!
  assert.match(etag, /^"/)

  const gz = await get(origin, '/page.html', { 'accept-encoding': 'gzip' })
  assert.equal(gz.status, 200)
  assert.equal(gz.headers['content-encoding'], 'gzip')
  assert.ok(varies(gz))
  assert.equal(gz.headers['content-length'], undefined)
  assert.equal(gz.headers['transfer-encoding'], 'chunked')
  assert.equal(gz.headers['accept-ranges'], undefined)
  assert.equal(gz.headers.etag, `W/${etag}`)
  assert.ok(gz.raw.length < Buffer.byteLength(PAGE) / 4)
  assert.equal(decode(gz), PAGE)

  const br = await get(origin, '/page.html', { 'accept-encoding': 'br' })
  assert.equal(br.headers['content-encoding'], 'br')
  assert.equal(decode(br), PAGE)

  const c = await curl(`${origin}/page.html`, '--compressed')
  assert.match(c.head, /\r\ncontent-encoding: (br|gzip|zstd)\r\n/)
  assert.equal(c.body, PAGE)
  const cbr = await curl(`${origin}/page.html`, '--compressed', '-H', 'Accept-Encoding: br')
  assert.match(cbr.head, /\r\ncontent-encoding: br\r\n/)
  assert.equal(cbr.body, PAGE)

  // The weak tag the client holds revalidates: 304, naming the coded variant again.
  const again = await get(origin, '/page.html', { 'accept-encoding': 'gzip', 'if-none-match': `W/${etag}` })
  assert.equal(again.status, 304)
  assert.equal(again.headers.etag, `W/${etag}`)
})

test('negotiation: q-values, the server preference on a tie, q=0, identity preferred, zstd only where Node has it', async (t) => {
  const origin = await staticServer(t)
  const coding = async (accept: string) =>
    (await get(origin, '/page.html', { 'accept-encoding': accept })).headers['content-encoding']
  assert.equal(await coding('gzip;q=1, br;q=0.5'), 'gzip')
  assert.equal(await coding('gzip, br'), 'br')
  assert.equal(await coding('*'), ZSTD_AVAILABLE ? 'zstd' : 'br')
  assert.equal(await coding('gzip;q=0, deflate'), undefined)
  assert.equal(await coding('br;q=0, gzip'), 'gzip')
  assert.equal(await coding('identity, gzip;q=0.5'), undefined)
  assert.equal(await coding('zstd'), ZSTD_AVAILABLE ? 'zstd' : undefined)
  const refused = await get(origin, '/page.html', { 'accept-encoding': 'gzip;q=0' })
  assert.ok(varies(refused))
  assert.equal(refused.raw.toString(), PAGE)
})

test('never coded: Range (206), HEAD, small, image/png; route `encode = false`; the return action is coded', async (t) => {
  const origin = await staticServer(t)
  const ae = { 'accept-encoding': 'gzip, br' }
  const range = await get(origin, '/page.html', { ...ae, range: 'bytes=0-99' })
  assert.equal(range.status, 206)
  assert.equal(range.headers['content-encoding'], undefined)
  assert.equal(range.raw.toString(), PAGE.slice(0, 100))

  const head = await get(origin, '/page.html', ae, 'HEAD')
  assert.equal(head.status, 200)
  assert.equal(head.headers['content-encoding'], undefined)
  assert.equal(head.headers['content-length'], String(Buffer.byteLength(PAGE)))
  assert.ok(varies(head))

  const tiny = await get(origin, '/tiny.txt', ae)
  assert.equal(tiny.headers['content-encoding'], undefined)
  assert.equal(tiny.raw.toString(), 'tiny\n')
  assert.ok(!varies(tiny), 'below min_length nothing would be coded: no Vary')

  const png = await get(origin, '/image.png', ae)
  assert.equal(png.headers['content-encoding'], undefined)
  assert.equal(png.raw.length, 8008)

  const off = await get(origin, '/plain', ae)
  assert.equal(off.headers['content-encoding'], undefined)
  assert.ok(!varies(off))

  const returned = await get(origin, '/returned', { 'accept-encoding': 'gzip' })
  assert.equal(returned.headers['content-encoding'], 'gzip')
  assert.equal(decode(returned), PAGE)
})

test('WSGI (Flask): coded, streamed, Vary merged; already coded, no-transform, small and images left alone', async (t) => {
  const { origin } = await startGatehouse(t, {
    routes: [
      {
        path: '/',
        encode: { min_length: 2048 },
        wsgi: { app: 'flask_app:app', chdir: ENCODE, python: PYTHON, workers: 1 },
      },
    ],
  })
  await eventually(async () => (await get(origin, '/small')).status === 200, 'the Flask pool')
  const ae = { 'accept-encoding': 'gzip' }
  const text = (await get(origin, '/big')).raw.toString()
  assert.ok(text.length > 30_000)

  const big = await get(origin, '/big', ae)
  assert.equal(big.headers['content-encoding'], 'gzip')
  assert.equal(big.headers.etag, 'W/"flask-1"')
  assert.equal(decode(big), text)
  const stream = await get(origin, '/stream', { 'accept-encoding': 'br' })
  assert.equal(stream.headers['content-encoding'], 'br')
  assert.equal(decode(stream), text)
  const c = await curl(`${origin}/big`, '--compressed')
  assert.equal(c.body, text)

  const vary = await get(origin, '/vary', ae)
  assert.equal(vary.headers['content-encoding'], 'gzip')
  assert.equal(vary.headers.vary, 'Cookie, Accept-Encoding')

  const encoded = await get(origin, '/encoded', { 'accept-encoding': 'gzip, br' })
  assert.equal(encoded.headers['content-encoding'], 'gzip')
  assert.equal(gunzipSync(encoded.raw).toString(), text, 'coded once, by the app')
  const noTransform = await get(origin, '/no-transform', ae)
  assert.equal(noTransform.headers['content-encoding'], undefined)
  assert.equal(noTransform.raw.toString(), text)
  const small = await get(origin, '/small', ae)
  assert.equal(small.headers['content-encoding'], undefined)
  assert.equal(small.raw.toString(), 'small')
  const png = await get(origin, '/png', ae)
  assert.equal(png.headers['content-encoding'], undefined)
  assert.equal(png.raw.length, 8008)
})

test('CGI and PHP (php-cgi over FastCGI): coded, curl reads them back', async (t) => {
  const { origin } = await startGatehouse(t, {
    encode: { br: false },
    routes: [
      { path: '/php/', php: { root: join(ENCODE, 'php'), workers: { pm: 'static', max_children: 1 } } },
      { path: '/', cgi: { root: ENCODE } },
    ],
  })
  const cgiText = (await get(origin, '/big.sh')).raw.toString()
  assert.match(cgiText, /^line 0 of a compressible CGI response\n/)
  const cgi = await get(origin, '/big.sh', { 'accept-encoding': 'br, gzip;q=0.5' })
  assert.equal(cgi.headers['content-encoding'], 'gzip', 'br is off: gzip')
  assert.equal(decode(cgi), cgiText)

  const phpText = (await get(origin, '/php/big.php')).raw.toString()
  assert.match(phpText, /^<p>line 0 of a compressible PHP response<\/p>\n/)
  const php = await curl(`${origin}/php/big.php`, '--compressed')
  assert.match(php.head, /\r\ncontent-encoding: gzip\r\n/)
  assert.match(php.head, /\r\nvary: accept-encoding\r\n/)
  assert.equal(php.body, phpText)
})

/** GET with `coding`, the reader stopping for a while after the first chunk; the decoded body. */
function slowDecoded(port: number, path: string, coding: 'gzip' | 'br'): Promise<string> {
  return new Promise<string>((resolve, reject) => {
    const req = request(
      { host: '127.0.0.1', port, path, headers: { 'accept-encoding': coding }, agent: false },
      (res) => {
        assert.equal(res.headers['content-encoding'], coding)
        const decoder = coding === 'gzip' ? createGunzip() : createBrotliDecompress()
        const parts: Buffer[] = []
        decoder.on('data', (c: Buffer) => parts.push(c))
        decoder.on('end', () => resolve(Buffer.concat(parts).toString()))
        decoder.on('error', reject)
        res.once('data', () => {
          // The socket, the coder and the response buffer fill meanwhile.
          res.pause()
          setTimeout(() => res.resume(), 300)
        })
        res.pipe(decoder)
      },
    )
    req.on('error', reject)
    req.end()
  })
}

test('a large streamed body through the coder to a reader that stops: whole and in order, with and without response buffering', async (t) => {
  const { port } = await startGatehouse(t, {
    encode: true,
    routes: [
      { path: '/unbuffered/', cgi: { root: ENCODE, response_buffering: false } },
      { path: '/', cgi: { root: ENCODE, response_buffer_memory: '64k' } },
    ],
  })
  let expected = ''
  for (let i = 1; i <= 1_000_000; i++) expected += `${i}\n`
  assert.equal(await slowDecoded(port, '/many.sh', 'gzip'), expected)
  assert.equal(await slowDecoded(port, '/unbuffered/many.sh', 'br'), expected)
})

test(
  'ASGI: a streamed response is flushed through the coder, its first chunk before the app ends',
  { timeout: 60_000 },
  async (t) => {
    const gate = tempDir(t, 'gh-encode-gate-')
    const { port } = await startGatehouse(t, {
      encode: true,
      routes: [
        {
          path: '/',
          asgi: {
            app: 'asgi_stream:app',
            chdir: ENCODE,
            python: PYTHON,
            workers: 1,
            env: { GATE_DIR: gate },
          },
        },
      ],
    })
    for (const coding of ['gzip', 'br'] as const) {
      const text = await new Promise<string>((resolve, reject) => {
        const req = request(
          { host: '127.0.0.1', port, path: '/', headers: { 'accept-encoding': coding }, agent: false },
          (res) => {
            assert.equal(res.headers['content-encoding'], coding)
            const decoder = coding === 'gzip' ? createGunzip() : createBrotliDecompress()
            let text = ''
            decoder.setEncoding('utf8')
            decoder.on('data', (s: string) => {
              text += s
              // The app waits for the gate: only the flushed first chunk can get here.
              if (text === 'data: first\n\n') writeFileSync(join(gate, 'go'), '')
            })
            decoder.on('end', () => resolve(text))
            decoder.on('error', reject)
            res.pipe(decoder)
          },
        )
        req.on('error', reject)
        req.end()
      })
      assert.equal(text, 'data: first\n\ndata: second\n\ndata: end\n\n')
      rmSync(join(gate, 'go'), { force: true })
    }
  },
)

test('`gatehouse serve --static DIR --encode`: curl gets gzip; without the flag it does not', async (t) => {
  const root = tempDir(t, 'gh-encode-cli-')
  writeFileSync(join(root, 'page.html'), PAGE)
  for (const flags of [['--encode'], ['--compress'], []]) {
    const child = spawn(
      process.execPath,
      [CLI, 'serve', '--listen', '127.0.0.1:0', '--log-format', 'json', '--static', root, ...flags],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    )
    t.after(() => stopServe(child))
    const { address } = await listeningAddress(child)
    const c = await curl(`http://${address}/page.html`, '--compressed', '-H', 'Accept-Encoding: gzip')
    assert.equal(c.body, PAGE)
    if (flags.length > 0) assert.match(c.head, /\r\ncontent-encoding: gzip\r\n/, flags[0])
    else assert.doesNotMatch(c.head, /content-encoding/)
    await stopServe(child)
  }
})
