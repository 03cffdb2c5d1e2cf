import assert from 'node:assert/strict'
import { test } from 'node:test'
import fc from 'fast-check'
import { GatehouseError, ProtocolError } from '../../../src/core/errors.js'
import { clientError } from '../../../src/gateways/uwsgi/errors.js'
import {
  type HttpResponseHead,
  HttpResponseParser,
  type HttpResponseParserOptions,
} from '../../../src/gateways/uwsgi/http-response.js'

interface Result {
  head: HttpResponseHead | null
  body: string
  ended: boolean
  trailers: string[]
  /** The fields of each 103 Early Hints, in order. */
  hints: string[][]
}

/** Feed pieces, then (when `close`) signal the end of the connection. */
function run(pieces: Buffer[], options: HttpResponseParserOptions = {}, close = true): Result {
  const parser = new HttpResponseParser(options)
  const out: Result = { head: null, body: '', ended: false, trailers: [], hints: [] }
  const apply = (events: ReturnType<HttpResponseParser['push']>) => {
    for (const e of events) {
      if (e.kind === 'head') {
        assert.equal(out.head, null, 'one head')
        out.head = e.head
      } else if (e.kind === 'early-hints') {
        assert.equal(out.head, null, 'hints come before the head')
        out.hints.push([...e.rawHeaders])
      } else if (e.kind === 'body') {
        assert.ok(!out.ended)
        out.body += e.chunk.toString('latin1')
      } else {
        assert.ok(!out.ended, 'one end')
        out.ended = true
        out.trailers = [...e.rawTrailers]
      }
    }
  }
  for (const p of pieces) apply(parser.push(p))
  if (close) apply(parser.finish())
  return out
}

const everySplit = (text: string, options: HttpResponseParserOptions = {}) => {
  const buf = Buffer.from(text, 'latin1')
  const whole = run([buf], options)
  for (let i = 0; i <= buf.length; i++) {
    assert.deepEqual(run([buf.subarray(0, i), buf.subarray(i)], options), whole, `split at ${i}`)
  }
  assert.deepEqual(
    run(
      [...buf].map((b) => Buffer.from([b])),
      options,
    ),
    whole,
    'byte by byte',
  )
  return whole
}

/**
 * The parser threw an 'http' (or, for the body, 'chunked') ProtocolError that the uwsgi
 * client turns into GH_ERR_UPSTREAM, with a message that matches.
 */
const upstream = (pattern?: RegExp) => (err: unknown) => {
  if (!(err instanceof ProtocolError) || (err.protocol !== 'http' && err.protocol !== 'chunked')) return false
  const mapped = clientError(err)
  return (
    mapped instanceof GatehouseError &&
    mapped.code === 'GH_ERR_UPSTREAM' &&
    mapped.cause === err &&
    (!pattern || pattern.test(mapped.message))
  )
}

test('Content-Length body, split at every offset', () => {
  const r = everySplit(
    'HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\nhello',
  )
  assert.equal(r.head!.status, 200)
  assert.equal(r.head!.statusMessage, 'OK')
  assert.equal(r.head!.framing, 'length')
  assert.deepEqual(r.head!.rawHeaders, [
    'Content-Type',
    'text/plain',
    'Content-Length',
    '5',
    'Set-Cookie',
    'a=1',
    'Set-Cookie',
    'b=2',
  ])
  assert.equal(r.body, 'hello')
  assert.ok(r.ended)
})

test('a Content-Length body ends without waiting for close; bytes after it are ignored', () => {
  const r = run([Buffer.from('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA')], {}, false)
  assert.equal(r.body, 'ok')
  assert.ok(r.ended)
})

test('a body delimited by close (what uWSGI sends for a streamed response), split at every offset', () => {
  const r = everySplit('HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\npart0\npart1\n')
  assert.equal(r.head!.framing, 'close')
  assert.equal(r.body, 'part0\npart1\n')
  assert.ok(r.ended)
  const open = run([Buffer.from('HTTP/1.1 200 OK\r\n\r\nabc')], {}, false)
  assert.equal(open.ended, false, 'not ended until the connection closes')
})

test('chunked body with extensions and trailers, split at every offset', () => {
  const r = everySplit(
    'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-Checksum: 42\r\n\r\n',
  )
  assert.equal(r.head!.framing, 'chunked')
  assert.equal(r.body, 'helloabcdefghijklmnopqrstuvwxyz')
  assert.deepEqual(r.trailers, ['X-Checksum', '42'])
  assert.ok(r.ended)
})

test('bare LF line endings are tolerated', () => {
  const r = everySplit('HTTP/1.0 404 Not Found\nContent-Length: 3\n\nnop')
  assert.equal(r.head!.httpVersion, '1.0')
  assert.equal(r.head!.status, 404)
  assert.equal(r.body, 'nop')
})

test('no body for HEAD, 204 and 304, whatever the headers say', () => {
  const head = run([Buffer.from('HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n')], { noBody: true }, false)
  assert.equal(head.head!.framing, 'none')
  assert.ok(head.ended)
  for (const status of [204, 304]) {
    const r = run([Buffer.from(`HTTP/1.1 ${status} X\r\nContent-Length: 5\r\n\r\n`)], {}, false)
    assert.equal(r.head!.framing, 'none')
    assert.ok(r.ended)
  }
})

test('interim 1xx responses are skipped; each 103 Early Hints is an event with its fields', () => {
  const r = everySplit(
    'HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 102 Processing\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </b>; rel=preload\r\nLink: </c>\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 1\r\n\r\nx',
  )
  assert.equal(r.head!.status, 201)
  assert.equal(r.body, 'x')
  assert.deepEqual(r.hints, [
    ['Link', '</a>'],
    ['Link', '</b>; rel=preload', 'Link', '</c>'],
  ])
})

test('Transfer-Encoding wins over Content-Length, which is then removed', () => {
  const r = run([
    Buffer.from(
      'HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n',
    ),
  ])
  assert.equal(r.head!.framing, 'chunked')
  assert.deepEqual(r.head!.rawHeaders, ['Transfer-Encoding', 'chunked'])
  assert.equal(r.body, 'x')
  const gz = run([Buffer.from('HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nzz')])
  assert.equal(gz.head!.framing, 'close')
})

test('an empty reason phrase and a missing one are accepted', () => {
  assert.equal(run([Buffer.from('HTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n')]).head!.statusMessage, '')
  assert.equal(run([Buffer.from('HTTP/1.1 500\r\nContent-Length: 0\r\n\r\n')]).head!.status, 500)
})

test('invalid responses are GH_ERR_UPSTREAM errors', () => {
  const bad: [string, RegExp][] = [
    ['garbage\r\n\r\n', /status line/],
    ['HTTP/2 200 OK\r\n\r\n', /status line/],
    ['HTTP/1.1 20 OK\r\n\r\n', /status line/],
    ['HTTP/1.1 200 OK\r\nno colon here\r\n\r\n', /malformed header/],
    ['HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n', /invalid header name/],
    ['HTTP/1.1 200 OK\r\nX: a\r\n folded\r\n\r\n', /folding/],
    ['HTTP/1.1 200 OK\r\nX: a\rb\r\n\r\n', /control character/],
    ['HTTP/1.1 200 OK\r\nX: a\x00b\r\n\r\n', /control character/],
    ['HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n', /conflicting/],
    ['HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n', /Content-Length/],
    ['HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n', /chunk size/],
    ['HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nxy\r\n', /longer than its size/],
    ['HTTP/1.1 101 Switching Protocols\r\n\r\n', /101/],
  ]
  for (const [text, message] of bad) {
    assert.throws(
      () => run([Buffer.from(text, 'latin1')], {}, false),
      upstream(message),
      JSON.stringify(text),
    )
  }
  // Identical repeated Content-Length values are one value (RFC 9110 8.6).
  assert.equal(run([Buffer.from('HTTP/1.1 200 OK\r\nContent-Length: 1, 1\r\n\r\nx')]).body, 'x')
})

test('a reply cut short is reported at close', () => {
  const truncated: [string, RegExp][] = [
    ['', /without a response/],
    ['HTTP/1.1 200 OK\r\nContent-', /response head/],
    ['HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc', /7 bytes short/],
    ['HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab', /chunked/],
  ]
  for (const [text, message] of truncated)
    assert.throws(() => run([Buffer.from(text)]), upstream(message), text)
})

test('limits: header bytes, header count, chunk-size line', () => {
  const big = `HTTP/1.1 200 OK\r\nX: ${'a'.repeat(2000)}\r\n\r\n`
  assert.throws(() => run([Buffer.from(big)], { maxHeaderBytes: 1024 }, false), upstream(/too large/))
  // Refused as soon as the limit is passed, without waiting for the end of the head.
  assert.throws(
    () => run([Buffer.from(big.slice(0, 1500))], { maxHeaderBytes: 1024 }, false),
    upstream(/too large/),
  )
  const many = `HTTP/1.1 200 OK\r\n${'X: 1\r\n'.repeat(11)}\r\n`
  assert.throws(() => run([Buffer.from(many)], { maxHeaders: 10 }, false), upstream(/too many/))
  const longChunk = `HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1;${'x'.repeat(5000)}\r\n`
  assert.throws(() => run([Buffer.from(longChunk)], {}, false), upstream(/too long/))
})

test('property: chunked bodies of any content and chunking decode to the same bytes at any split', () => {
  fc.assert(
    fc.property(
      fc.array(fc.uint8Array({ minLength: 1, maxLength: 300 }), { maxLength: 8 }),
      fc.array(fc.nat(), { maxLength: 5 }),
      (chunks, cuts) => {
        const wire = Buffer.concat([
          Buffer.from('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n'),
          ...chunks.map((c) =>
            Buffer.concat([Buffer.from(`${c.length.toString(16)}\r\n`), Buffer.from(c), Buffer.from('\r\n')]),
          ),
          Buffer.from('0\r\n\r\n'),
        ])
        const offsets = [...new Set(cuts.map((c) => c % (wire.length + 1)))].sort((a, b) => a - b)
        const pieces: Buffer[] = []
        let last = 0
        for (const o of offsets) {
          pieces.push(wire.subarray(last, o))
          last = o
        }
        pieces.push(wire.subarray(last))
        const r = run(pieces, {}, false)
        assert.ok(r.ended)
        assert.equal(r.body, Buffer.concat(chunks.map((c) => Buffer.from(c))).toString('latin1'))
      },
    ),
    { numRuns: 300 },
  )
})

test('property: arbitrary bytes produce events or a ProtocolError, nothing else', () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 400 }), fc.boolean(), (bytes, prefix) => {
      const buf = Buffer.concat([Buffer.from(prefix ? 'HTTP/1.1 200 OK\r\n' : ''), Buffer.from(bytes)])
      try {
        run([buf])
      } catch (err) {
        assert.ok(
          err instanceof ProtocolError && (err.protocol === 'http' || err.protocol === 'chunked'),
          String(err),
        )
      }
    }),
    { numRuns: 500 },
  )
})

test('the parser throws ProtocolError with its HTTP_* (or CHUNKED_*) code', () => {
  const cases: [string, string, string][] = [
    ['garbage\r\n\r\n', 'http', 'HTTP_BAD_STATUS_LINE'],
    // The one status rule (issue 18 item 13): a final status is 200-599, as from CGI.
    ['HTTP/1.1 999 Weird\r\nContent-Length: 0\r\n\r\n', 'http', 'HTTP_BAD_STATUS_LINE'],
    ['HTTP/1.1 600 X\r\nContent-Length: 0\r\n\r\n', 'http', 'HTTP_BAD_STATUS_LINE'],
    ['HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n', 'http', 'HTTP_BAD_HEADER'],
    ['HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n', 'http', 'HTTP_BAD_CONTENT_LENGTH'],
    ['HTTP/1.1 101 Switching Protocols\r\n\r\n', 'http', 'HTTP_UPGRADE'],
    ['HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab', 'http', 'HTTP_TRUNCATED'],
    ['HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n', 'chunked', 'CHUNKED_BAD_SIZE'],
  ]
  for (const [text, protocol, code] of cases) {
    assert.throws(
      () => run([Buffer.from(text, 'latin1')]),
      (err: unknown) => err instanceof ProtocolError && err.protocol === protocol && err.code === code,
      code,
    )
  }
  assert.throws(
    () => run([Buffer.from('HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\n\r\n')], { maxHeaders: 1 }),
    (err: unknown) => err instanceof ProtocolError && err.code === 'HTTP_TOO_MANY_HEADERS',
  )
  assert.throws(
    () => run([Buffer.from(`HTTP/1.1 200 OK\r\nA: ${'x'.repeat(200)}\r\n\r\n`)], { maxHeaderBytes: 100 }),
    (err: unknown) => err instanceof ProtocolError && err.code === 'HTTP_HEAD_TOO_LARGE',
  )
})
