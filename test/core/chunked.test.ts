import assert from 'node:assert/strict'
import { test } from 'node:test'
import fc from 'fast-check'
import { ChunkedDecoder, type ChunkedDecoderOptions } from '../../src/core/chunked.js'
import { isProtocolError, ProtocolError } from '../../src/core/errors.js'

interface Decoded {
  body: string
  trailers: string[]
  done: boolean
  /** The bytes after the end of the coding, as the decoder reported them. */
  after: string
}

/** Feed `pieces` to one decoder; what came out. */
function decode(pieces: Buffer[], options: ChunkedDecoderOptions = {}): Decoded {
  const decoder = new ChunkedDecoder(options)
  const out: Decoded = { body: '', trailers: [], done: false, after: '' }
  for (const piece of pieces) {
    const used = decoder.push(
      piece,
      (chunk) => {
        assert.ok(chunk.length > 0, 'no empty data')
        out.body += chunk.toString('latin1')
      },
      (line) => out.trailers.push(line),
    )
    assert.ok(used <= piece.length)
    if (used < piece.length) assert.ok(decoder.done, 'bytes are left over only after the end')
    out.after += piece.toString('latin1', used)
  }
  out.done = decoder.done
  return out
}

/** The same result whole, split in two at every offset, and byte by byte. */
function everySplit(text: string, options: ChunkedDecoderOptions = {}): Decoded {
  const buf = Buffer.from(text, 'latin1')
  const whole = decode([buf], options)
  for (let i = 0; i <= buf.length; i++) {
    assert.deepEqual(decode([buf.subarray(0, i), buf.subarray(i)], options), whole, `split at ${i}`)
  }
  assert.deepEqual(
    decode(
      [...buf].map((b) => Buffer.from([b])),
      options,
    ),
    whole,
    'byte by byte',
  )
  return whole
}

/** Every split of `text` fails with a chunked ProtocolError whose message matches. */
function failsAtEverySplit(text: string, message: RegExp, options: ChunkedDecoderOptions = {}): void {
  const buf = Buffer.from(text, 'latin1')
  for (let i = 0; i <= buf.length; i++) {
    assert.throws(
      () => decode([buf.subarray(0, i), buf.subarray(i)], options),
      (err: unknown) => isProtocolError(err, 'chunked') && message.test(err.message),
      `${JSON.stringify(text)} split at ${i}`,
    )
  }
}

test('chunks, extensions and trailers, split at every offset', () => {
  const r = everySplit(
    '5;ext=1\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-Checksum: 42\r\nX-B: 2\r\n\r\n',
  )
  assert.equal(r.body, 'helloabcdefghijklmnopqrstuvwxyz')
  assert.deepEqual(r.trailers, ['X-Checksum: 42', 'X-B: 2'])
  assert.ok(r.done)
  assert.equal(r.after, '')
})

test('bare LF line ends, upper-case hex and whitespace before an extension', () => {
  const r = everySplit('A \t;name="v"\nabcdefghij\n0\n\n')
  assert.equal(r.body, 'abcdefghij')
  assert.ok(r.done)
})

test('the bytes after the end are not taken: push() says where the coding stopped', () => {
  const r = everySplit('3\r\nabc\r\n0\r\n\r\nHTTP/1.1 200 OK\r\n')
  assert.equal(r.body, 'abc')
  assert.equal(r.after, 'HTTP/1.1 200 OK\r\n')
  const decoder = new ChunkedDecoder()
  assert.equal(
    decoder.push(Buffer.from('0\r\n\r\nrest'), () => assert.fail('no data')),
    5,
  )
  assert.equal(
    decoder.push(Buffer.from('more'), () => assert.fail('no data')),
    0,
  )
})

test('an unfinished coding is not done, wherever it stops', () => {
  const wire = '3\r\nabc\r\n0\r\nX: 1\r\n\r\n'
  for (let i = 0; i < wire.length; i++) {
    const r = decode([Buffer.from(wire.slice(0, i))])
    assert.equal(r.done, false, `after ${i} bytes`)
    assert.equal(r.after, '')
  }
})

test('trailers without a callback are dropped', () => {
  const decoder = new ChunkedDecoder()
  let body = ''
  decoder.push(Buffer.from('2\r\nok\r\n0\r\nX: 1\r\n\r\n'), (c) => (body += c.toString()))
  assert.equal(body, 'ok')
  assert.ok(decoder.done)
})

test('invalid codings are chunked ProtocolErrors, at every split', () => {
  failsAtEverySplit('zz\r\n', /malformed chunk size "zz"/)
  failsAtEverySplit('\r\n', /malformed chunk size ""/)
  failsAtEverySplit('-1\r\n', /malformed chunk size/)
  failsAtEverySplit(`${'f'.repeat(14)}\r\n`, /malformed chunk size/)
  failsAtEverySplit('1\r\nxy\r\n', /longer than its size/)
  failsAtEverySplit('1\r\nx\r\r\n', /longer than its size/)
  failsAtEverySplit('1\r\nx0\r\n', /longer than its size/)
})

test('each invalid coding throws a ProtocolError with its chunked code', () => {
  const cases: [text: string, code: string, options?: ChunkedDecoderOptions][] = [
    ['zz\r\n', 'CHUNKED_BAD_SIZE'],
    ['1\r\nxy\r\n', 'CHUNKED_DATA_TOO_LONG'],
    [`1;${'x'.repeat(100)}\r\n`, 'CHUNKED_SIZE_LINE_TOO_LONG', { maxSizeLineBytes: 64 }],
    [`0\r\nX: ${'a'.repeat(200)}\r\n\r\n`, 'CHUNKED_TRAILERS_TOO_LARGE', { maxTrailerBytes: 100 }],
    [`0\r\n${'X: 1\r\n'.repeat(4)}\r\n`, 'CHUNKED_TOO_MANY_TRAILERS', { maxTrailers: 3 }],
  ]
  for (const [text, code, options] of cases) {
    assert.throws(
      () => decode([Buffer.from(text, 'latin1')], options),
      (err: unknown) => err instanceof ProtocolError && err.protocol === 'chunked' && err.code === code,
      code,
    )
  }
})

test('limits: the size line, the trailer section, the number of trailers', () => {
  failsAtEverySplit(`1;${'x'.repeat(100)}\r\n`, /chunk size line too long/, { maxSizeLineBytes: 64 })
  // Up to the limit is fine, with either line end.
  assert.equal(
    decode([Buffer.from(`1;${'x'.repeat(62)}\r\nz\r\n0\r\n\r\n`)], { maxSizeLineBytes: 64 }).body,
    'z',
  )
  assert.equal(decode([Buffer.from(`1;${'x'.repeat(62)}\nz\n0\n\n`)], { maxSizeLineBytes: 64 }).body, 'z')
  // Refused as soon as the line is over the limit, without waiting for its end.
  assert.throws(
    () => decode([Buffer.from(`1;${'x'.repeat(5000)}`)]),
    (err: unknown) => isProtocolError(err, 'chunked') && /too long/.test(err.message),
  )
  failsAtEverySplit(`0\r\nX: ${'a'.repeat(200)}\r\n\r\n`, /trailer section too long/, {
    maxTrailerBytes: 100,
  })
  failsAtEverySplit(`0\r\n${'X: 1\r\n'.repeat(4)}\r\n`, /too many trailer fields/, { maxTrailers: 3 })
  assert.deepEqual(decode([Buffer.from(`0\r\n${'X: 1\r\n'.repeat(3)}\r\n`)], { maxTrailers: 3 }).trailers, [
    'X: 1',
    'X: 1',
    'X: 1',
  ])
})

test('property: any body in any chunking decodes to the same bytes at any split', () => {
  fc.assert(
    fc.property(
      fc.array(fc.uint8Array({ minLength: 1, maxLength: 300 }), { maxLength: 8 }),
      fc.array(fc.nat(), { maxLength: 6 }),
      fc.boolean(),
      (chunks, cuts, bareLf) => {
        const eol = bareLf ? '\n' : '\r\n'
        const wire = Buffer.concat([
          ...chunks.map((c) =>
            Buffer.concat([Buffer.from(`${c.length.toString(16)}${eol}`), Buffer.from(c), Buffer.from(eol)]),
          ),
          Buffer.from(`0${eol}${eol}`),
        ])
        const offsets = [...new Set(cuts.map((c) => c % (wire.length + 1)))].sort((a, b) => a - b)
        const pieces: Buffer[] = []
        let last = 0
        for (const o of offsets) {
          pieces.push(wire.subarray(last, o))
          last = o
        }
        pieces.push(wire.subarray(last))
        const r = decode(pieces)
        assert.ok(r.done)
        assert.equal(r.body, Buffer.concat(chunks.map((c) => Buffer.from(c))).toString('latin1'))
      },
    ),
    { numRuns: 300 },
  )
})

test('property: arbitrary bytes decode or throw a chunked ProtocolError, nothing else', () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 300 }), (bytes) => {
      try {
        decode([Buffer.from(bytes)], { maxTrailerBytes: 64, maxTrailers: 4 })
      } catch (err) {
        assert.ok(isProtocolError(err, 'chunked'), String(err))
      }
    }),
    { numRuns: 500 },
  )
})
