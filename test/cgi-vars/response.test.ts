import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import fc from 'fast-check'
import {
  type CgiParseResult,
  type CgiResponseErrorCode,
  type CgiResponseHead,
  CgiResponseParser,
} from '../../src/cgi-vars/response.js'
import { ProtocolError } from '../../src/core/errors.js'

type Outcome = { head: CgiResponseHead; body: Buffer } | { error: CgiResponseErrorCode }

/** Feed the pieces in order, collecting body bytes after the head, then end(). */
function parsePieces(pieces: Buffer[], maxHeaderBytes?: number): Outcome {
  const parser = new CgiResponseParser(maxHeaderBytes === undefined ? {} : { maxHeaderBytes })
  let head: CgiResponseHead | null = null
  const body: Buffer[] = []
  for (const piece of pieces) {
    const r: CgiParseResult = parser.push(piece)
    if (r.type === 'error') return { error: r.error.code }
    if (r.type === 'complete') {
      head = r.head
      body.push(r.body)
    }
    if (r.type === 'body') body.push(r.body)
  }
  const err = parser.end()
  if (err) return { error: err.code }
  return { head: head!, body: Buffer.concat(body) }
}

/** Parse `text` whole, then split at every offset into two and three pieces: all must agree. */
function parseEverySplit(text: string | Buffer, maxHeaderBytes?: number): Outcome {
  const bytes = typeof text === 'string' ? Buffer.from(text, 'latin1') : text
  const whole = parsePieces([bytes], maxHeaderBytes)
  for (let i = 0; i <= bytes.length; i++) {
    const two = parsePieces([bytes.subarray(0, i), bytes.subarray(i)], maxHeaderBytes)
    assert.deepEqual(two, whole, `split at ${i}`)
  }
  for (let i = 0; i <= bytes.length; i += 3) {
    for (let j = i; j <= bytes.length; j += 5) {
      const three = parsePieces(
        [bytes.subarray(0, i), bytes.subarray(i, j), bytes.subarray(j)],
        maxHeaderBytes,
      )
      assert.deepEqual(three, whole, `split at ${i} and ${j}`)
    }
  }
  // One byte at a time.
  assert.deepEqual(
    parsePieces(
      [...bytes].map((b) => Buffer.from([b])),
      maxHeaderBytes,
    ),
    whole,
    'byte by byte',
  )
  return whole
}

function head(text: string): CgiResponseHead {
  const r = parseEverySplit(text)
  assert.ok('head' in r, `expected a head, got ${JSON.stringify(r)}`)
  return r.head
}

function errorOf(text: string | Buffer, maxHeaderBytes?: number): CgiResponseErrorCode {
  const r = parseEverySplit(text, maxHeaderBytes)
  assert.ok('error' in r, `expected an error, got ${JSON.stringify(r)}`)
  return r.error
}

describe('CGI response parser', () => {
  test('a document with LF line endings: status 200, fields in order, body untouched', () => {
    const r = parseEverySplit('Content-Type: text/plain\nX-A: 1\n\nhello\r\n\nworld')
    assert.ok('head' in r)
    assert.equal(r.head.kind, 'document')
    assert.equal(r.head.status, 200)
    assert.equal(r.head.contentType, 'text/plain')
    assert.deepEqual(r.head.headers, [
      ['Content-Type', 'text/plain'],
      ['X-A', '1'],
    ])
    assert.equal(r.body.toString(), 'hello\r\n\nworld')
  })

  test('CRLF line endings, and a mix of both', () => {
    const a = head('Content-Type: text/html\r\nX-B: 2\r\n\r\n')
    assert.deepEqual(a.headers, [
      ['Content-Type', 'text/html'],
      ['X-B', '2'],
    ])
    const b = parseEverySplit('Content-Type: a/b\nX-C: 3\r\n\r\nbody')
    assert.ok('head' in b)
    assert.deepEqual(b.head.headers.at(-1), ['X-C', '3'])
    assert.equal(b.body.toString(), 'body')
  })

  test('Status gives the code and reason and is not passed on as a field', () => {
    const h = head('Status: 404 Not Here\nContent-Type: text/plain\n\n')
    assert.equal(h.status, 404)
    assert.equal(h.reason, 'Not Here')
    assert.ok(!h.headers.some(([n]) => n.toLowerCase() === 'status'))
    const bare = head('status:204\n\n')
    assert.equal(bare.status, 204)
    assert.equal(bare.reason, undefined)
  })

  test('repeated fields are all kept, in order (several Set-Cookie)', () => {
    const h = head('Content-Type: text/plain\nSet-Cookie: a=1\nSet-Cookie: b=2\nset-cookie: c=3\n\n')
    assert.deepEqual(
      h.headers.filter(([n]) => n.toLowerCase() === 'set-cookie').map(([, v]) => v),
      ['a=1', 'b=2', 'c=3'],
    )
  })

  test('values are trimmed of spaces and tabs; empty values are allowed', () => {
    const h = head('Content-Type:\t text/plain \t\nX-Empty:\n\n')
    assert.equal(h.contentType, 'text/plain')
    assert.deepEqual(h.headers[1], ['X-Empty', ''])
  })

  test('obs-text bytes in values survive (latin1 round trip of UTF-8)', () => {
    const bytes = Buffer.concat([
      Buffer.from('Content-Type: text/plain\nX-Name: '),
      Buffer.from('café'),
      Buffer.from('\n\n'),
    ])
    const r = parseEverySplit(bytes)
    assert.ok('head' in r)
    assert.equal(Buffer.from(r.head.headers[1]![1], 'latin1').toString('utf8'), 'café')
  })

  test('Location with an absolute path and no Status is a local redirect', () => {
    const h = head('Location: /other/script?x=1\n\n')
    assert.equal(h.kind, 'local-redirect')
    assert.equal(h.location, '/other/script?x=1')
    assert.equal(head('Status: 200\nLocation: /x\n\n').kind, 'local-redirect')
  })

  test('Location with an absolute URI is a client redirect, 302 unless Status says otherwise', () => {
    const h = head('Location: https://example.org/x\n\n')
    assert.equal(h.kind, 'client-redirect')
    assert.equal(h.status, 302)
    assert.deepEqual(h.headers, [['Location', 'https://example.org/x']])
    const moved = head('Status: 301 Moved\nLocation: https://example.org/\nContent-Type: text/html\n\n<a>')
    assert.equal(moved.kind, 'client-redirect')
    assert.equal(moved.status, 301)
    // "//host/path" is a network-path reference: for the client, not a local path.
    assert.equal(head('Location: //evil.example/\n\n').kind, 'client-redirect')
    // An abs-path with a 3xx Status is the script's own redirect to the client.
    const own = head('Status: 303 See Other\nLocation: /done\n\n')
    assert.equal(own.kind, 'client-redirect')
    assert.equal(own.status, 303)
  })

  test('Location with a non-3xx Status is a document (201 Created)', () => {
    const h = head('Status: 201 Created\nLocation: /items/5\nContent-Type: application/json\n\n{}')
    assert.equal(h.kind, 'document')
    assert.equal(h.status, 201)
    assert.equal(h.location, '/items/5')
  })

  test('Content-Length is parsed; equal repeats are merged, different ones refused', () => {
    assert.equal(head('Content-Type: a/b\nContent-Length: 12\n\n').contentLength, 12)
    const merged = head('Content-Type: a/b\nContent-Length: 5\nContent-Length: 5\n\n')
    assert.equal(merged.headers.filter(([n]) => n === 'Content-Length').length, 1)
    assert.equal(errorOf('Content-Type: a/b\nContent-Length: 5\nContent-Length: 6\n\n'), 'duplicate_field')
    assert.equal(errorOf('Content-Type: a/b\nContent-Length: -1\n\n'), 'invalid_content_length')
    assert.equal(errorOf('Content-Type: a/b\nContent-Length: 1e3\n\n'), 'invalid_content_length')
  })

  test('hop-by-hop fields are dropped and reported', () => {
    const h = head(
      'Content-Type: a/b\nConnection: close\nTransfer-Encoding: chunked\nKeep-Alive: 5\nX-Ok: 1\n\n',
    )
    assert.deepEqual(h.headers, [
      ['Content-Type', 'a/b'],
      ['X-Ok', '1'],
    ])
    assert.deepEqual(h.dropped, ['connection', 'transfer-encoding', 'keep-alive'])
  })

  test('no Content-Type, Status or Location is refused', () => {
    assert.equal(errorOf('X-Only: 1\n\nbody'), 'missing_content_type')
    assert.equal(errorOf('\nbody'), 'missing_content_type')
    assert.equal(errorOf('\r\n\r\n'), 'missing_content_type')
  })

  test('malformed lines are refused', () => {
    assert.equal(errorOf('Content-Type: a/b\nno colon here\n\n'), 'malformed_field')
    assert.equal(errorOf(': no name\n\n'), 'malformed_field')
    assert.equal(errorOf('Bad Name: x\nContent-Type: a/b\n\n'), 'malformed_field')
    assert.equal(errorOf('Content-Type: a/b\nX: a\x00b\n\n'), 'malformed_field')
    assert.equal(errorOf('Content-Type: a/b\nX: a\rb\n\n'), 'malformed_field')
    assert.equal(errorOf('Content-Type: a/b\nX-A: 1\n  continued\n\n'), 'line_folding')
    assert.equal(errorOf('HTTP/1.1 200 OK\nContent-Type: a/b\n\n'), 'malformed_field')
  })

  test('Status must be three digits in 200-599; Status, Location and Content-Type only once', () => {
    assert.equal(errorOf('Status: abc\n\n'), 'invalid_status')
    assert.equal(errorOf('Status: 99\n\n'), 'invalid_status')
    assert.equal(errorOf('Status: 100 Continue\n\n'), 'invalid_status')
    assert.equal(errorOf('Status: 600\n\n'), 'invalid_status')
    assert.equal(errorOf('Status: 2000\n\n'), 'invalid_status')
    assert.equal(errorOf('Status: 200\nStatus: 404\n\n'), 'duplicate_field')
    assert.equal(errorOf('Location: /a\nLocation: /b\n\n'), 'duplicate_field')
    assert.equal(errorOf('Content-Type: a/b\ncontent-type: c/d\n\n'), 'duplicate_field')
  })

  test('end of output: empty, or inside the header block', () => {
    assert.equal(errorOf(''), 'empty')
    assert.equal(errorOf('Content-Type: text/plain\n'), 'truncated')
    assert.equal(errorOf('Content-Type: text/pl'), 'truncated')
  })

  test('the header block size limit counts line endings and is enforced across pushes', () => {
    const block = 'Content-Type: text/plain\r\n\r\n' // 28 bytes
    assert.ok('head' in parseEverySplit(block, 28))
    assert.equal(errorOf(block, 27), 'header_too_large')
    // A single endless line is refused without waiting for its end.
    const parser = new CgiResponseParser({ maxHeaderBytes: 1000 })
    let r: CgiParseResult = { type: 'incomplete' }
    for (let i = 0; i < 100 && r.type === 'incomplete'; i++) r = parser.push(Buffer.alloc(100, 0x41))
    assert.equal(r.type, 'error')
    assert.equal(r.type === 'error' && r.error.code, 'header_too_large')
  })

  test('errors are sticky and name the line', () => {
    const parser = new CgiResponseParser()
    const r = parser.push(Buffer.from('Content-Type: a/b\nX-A: 1\nbroken\n'))
    assert.equal(r.type, 'error')
    assert.equal(r.type === 'error' && r.error.line, 3)
    assert.equal(parser.push(Buffer.from('\n')).type, 'error')
    assert.equal(parser.end()?.code, 'malformed_field')
  })

  test('a refused header block is a ProtocolError of protocol cgi, with its code and line', () => {
    const cases: [string, CgiResponseErrorCode, number | undefined][] = [
      ['Content-Type: a/b\nbroken\n\n', 'malformed_field', 2],
      ['Content-Type: a/b\n folded\n\n', 'line_folding', 2],
      ['Status: 99\n\n', 'invalid_status', undefined],
      ['X-A: 1\n\n', 'missing_content_type', undefined],
    ]
    for (const [text, code, line] of cases) {
      const r = new CgiResponseParser().push(Buffer.from(text))
      assert.equal(r.type, 'error', text)
      const err = r.type === 'error' ? r.error : null
      assert.ok(err instanceof ProtocolError, text)
      assert.equal(err.protocol, 'cgi')
      assert.equal(err.code, code, text)
      assert.equal(err.line, line, text)
    }
    for (const [text, code] of [
      ['', 'empty'],
      ['Content-Type: a/b\n', 'truncated'],
    ] as const) {
      const parser = new CgiResponseParser()
      parser.push(Buffer.from(text))
      const err = parser.end()
      assert.ok(err instanceof ProtocolError && err.protocol === 'cgi' && err.code === code, code)
    }
  })

  test('after the head, pushes are body, byte for byte', () => {
    const parser = new CgiResponseParser()
    const r = parser.push(Buffer.from('Content-Type: a/b\n\n'))
    assert.equal(r.type, 'complete')
    assert.equal(r.type === 'complete' && r.body.length, 0)
    const next = parser.push(Buffer.from('Status: 500\n\n'))
    assert.deepEqual(next, { type: 'body', body: Buffer.from('Status: 500\n\n') })
    assert.equal(parser.end(), null)
  })

  test('property: any valid block split anywhere gives the same fields and body', () => {
    const name = fc.stringMatching(/^X-[A-Za-z0-9-]{1,12}$/)
    const value = fc.stringMatching(/^[!-~]([ !-~]{0,20}[!-~])?$/)
    fc.assert(
      fc.property(
        fc.array(fc.tuple(name, value), { maxLength: 8 }),
        fc.boolean(),
        fc.uint8Array({ maxLength: 64 }),
        fc.nat(),
        fc.nat(),
        (fields, crlf, body, cut1, cut2) => {
          const eol = crlf ? '\r\n' : '\n'
          const text = ['Content-Type: x/y', ...fields.map(([n, v]) => `${n}: ${v}`)].join(eol) + eol + eol
          const bytes = Buffer.concat([Buffer.from(text, 'latin1'), Buffer.from(body)])
          const a = Math.min(cut1 % (bytes.length + 1), cut2 % (bytes.length + 1))
          const b = Math.max(cut1 % (bytes.length + 1), cut2 % (bytes.length + 1))
          const r = parsePieces([bytes.subarray(0, a), bytes.subarray(a, b), bytes.subarray(b)])
          assert.ok('head' in r)
          assert.deepEqual(r.head.headers, [['Content-Type', 'x/y'], ...fields])
          assert.deepEqual(r.body, Buffer.from(body))
        },
      ),
      { numRuns: 300 },
    )
  })
})
