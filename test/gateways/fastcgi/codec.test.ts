import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import fc from 'fast-check'
import {
  decodeBeginRequest,
  decodeEndRequest,
  decodeNameValuePairs,
  encodeBeginRequest,
  encodeEndRequest,
  encodeNameValuePairs,
  encodeParams,
  encodeRecord,
  encodeStream,
  encodeUnknownType,
  FCGI_HEADER_LEN,
  FCGI_MAX_CONTENT,
  type FcgiRecord,
  NameValueDecoder,
  RecordParser,
  RecordType,
  Role,
} from '../../../src/gateways/fastcgi/codec.js'
import { ProtocolError } from '../../../src/core/errors.js'
import { upstreamError, webServerErrorCode } from '../../../src/gateways/fastcgi/errors.js'

function parseAll(bytes: Buffer, splits: number[] = []): FcgiRecord[] {
  const out: FcgiRecord[] = []
  const p = new RecordParser((r) => out.push({ ...r, content: Buffer.from(r.content) }))
  let prev = 0
  for (const at of [...splits, bytes.length]) {
    p.feed(bytes.subarray(prev, at))
    prev = at
  }
  assert.equal(p.pending, 0)
  return out
}

/** A realistic request: BEGIN, PARAMS (with a pair that straddles records), STDIN, end markers. */
function sampleRequest(): Buffer {
  return Buffer.concat([
    ...encodeBeginRequest(1, Role.RESPONDER, true),
    ...encodeParams(1, [
      ['SCRIPT_FILENAME', '/srv/index.php'],
      ['QUERY_STRING', 'a=1&b=2'],
      ['HTTP_X_LONG', 'x'.repeat(200)],
    ]),
    ...encodeStream(RecordType.STDIN, 1, Buffer.from('name=value')),
    ...encodeRecord(RecordType.STDIN, 1),
  ])
}

describe('FastCGI records', () => {
  test('header layout, padding to 8 and the end-of-stream record', () => {
    const rec = Buffer.concat(encodeRecord(RecordType.STDOUT, 0x0102, Buffer.from('hello')))
    assert.deepEqual([...rec.subarray(0, 8)], [1, 6, 1, 2, 0, 5, 3, 0])
    assert.equal(rec.length, 16)
    assert.deepEqual([...Buffer.concat(encodeRecord(RecordType.STDIN, 1))], [1, 5, 0, 1, 0, 0, 0, 0])
  })

  test('a message split at every byte offset parses to the same records', () => {
    const bytes = sampleRequest()
    const whole = parseAll(bytes)
    assert.deepEqual(
      whole.map((r) => r.type),
      [RecordType.BEGIN_REQUEST, RecordType.PARAMS, RecordType.PARAMS, RecordType.STDIN, RecordType.STDIN],
    )
    for (let i = 0; i <= bytes.length; i++) assert.deepEqual(parseAll(bytes, [i]), whole, `split at ${i}`)
    for (let i = 0; i < bytes.length; i += 7)
      assert.deepEqual(parseAll(bytes, [i, Math.min(bytes.length, i + 3)]), whole)
  })

  test('BEGIN_REQUEST and END_REQUEST bodies round-trip', () => {
    const [begin] = parseAll(Buffer.concat(encodeBeginRequest(7, Role.AUTHORIZER, true)))
    assert.deepEqual(decodeBeginRequest(begin!.content), { role: Role.AUTHORIZER, keepConn: true })
    const [end] = parseAll(Buffer.concat(encodeEndRequest(7, 0xfffffffe, 2)))
    assert.deepEqual(decodeEndRequest(end!.content), { appStatus: 0xfffffffe, protocolStatus: 2 })
    assert.throws(() => decodeEndRequest(Buffer.alloc(3)), { code: 'FCGI_BAD_BODY' })
  })

  test('UNKNOWN_TYPE names the type it did not know', () => {
    const [r] = parseAll(Buffer.concat(encodeUnknownType(42)))
    assert.equal(r!.type, RecordType.UNKNOWN_TYPE)
    assert.equal(r!.requestId, 0)
    assert.equal(r!.content[0], 42)
  })

  test('long streams are split at FCGI_MAX_CONTENT, which php-fpm accepts', () => {
    const data = Buffer.alloc(FCGI_MAX_CONTENT * 2 + 5, 0x61)
    const records = parseAll(Buffer.concat(encodeStream(RecordType.STDIN, 3, data)))
    assert.deepEqual(
      records.map((r) => r.content.length),
      [FCGI_MAX_CONTENT, FCGI_MAX_CONTENT, 5],
    )
    assert.ok(records.every((r) => r.content.length + ((8 - (r.content.length % 8)) % 8) <= 65535))
  })

  test('a wrong version is a typed error; plain HTTP is named as such', () => {
    const p = new RecordParser(() => undefined)
    assert.throws(
      () => p.feed(Buffer.from('GET / HTTP/1.1\r\n\r\n')),
      (err: unknown) => {
        return (
          err instanceof ProtocolError &&
          err.protocol === 'fastcgi' &&
          err.code === 'FCGI_BAD_VERSION' &&
          /plain HTTP/.test(err.message)
        )
      },
    )
    assert.throws(() => p.feed(Buffer.alloc(8)), { code: 'FCGI_BAD_VERSION' })
  })

  test('records before a bad one are still delivered', () => {
    const got: number[] = []
    const p = new RecordParser((r) => got.push(r.type))
    const bytes = Buffer.concat([
      ...encodeRecord(RecordType.STDOUT, 1, Buffer.from('x')),
      Buffer.from([2, 0, 0, 0, 0, 0, 0, 0]),
    ])
    assert.throws(() => p.feed(bytes), { code: 'FCGI_BAD_VERSION' })
    assert.deepEqual(got, [RecordType.STDOUT])
  })
})

describe('FastCGI name-value pairs', () => {
  test('1-byte lengths up to 127, 4-byte lengths with the top bit from 128', () => {
    const short = encodeNameValuePairs([['A', 'x'.repeat(127)]])
    assert.equal(short[0], 1)
    assert.equal(short[1], 127)
    const long = encodeNameValuePairs([['A', 'x'.repeat(128)]])
    assert.deepEqual([...long.subarray(1, 5)], [0x80, 0, 0, 128])
    assert.deepEqual(decodeNameValuePairs(long), [['A', 'x'.repeat(128)]])
  })

  test('a 70,000-byte value straddles PARAMS records and decodes from any split', () => {
    const pairs: [string, string][] = [
      ['BIG', 'v'.repeat(70_000)],
      ['AFTER', 'yes'],
    ]
    const records = parseAll(Buffer.concat(encodeParams(9, pairs)))
    assert.ok(records.length >= 3, 'spread over several records plus the empty one')
    const stream = Buffer.concat(records.map((r) => r.content))
    for (const at of [0, 1, 3, 5, 6, 100, 65527, 65528, 65529, stream.length - 1]) {
      const d = new NameValueDecoder()
      d.feed(stream.subarray(0, at))
      d.feed(stream.subarray(at))
      assert.deepEqual(d.end(), pairs, `split at ${at}`)
    }
  })

  test('PARAMS records hold whole pairs (php-fpm decodes each record on its own)', () => {
    const pairs: [string, string][] = Array.from({ length: 5 }, (_, i) => [
      `HTTP_X_${i}`,
      `${i}`.repeat(40_000),
    ])
    const records = parseAll(Buffer.concat(encodeParams(3, pairs)))
    assert.equal(
      records.length,
      6,
      'five records of one pair each (two do not fit in one), then the empty one',
    )
    for (const [i, r] of records.slice(0, -1).entries()) {
      assert.ok(r.content.length <= FCGI_MAX_CONTENT)
      assert.deepEqual(decodeNameValuePairs(r.content, 1 << 20), [pairs[i]])
    }
    const small = parseAll(Buffer.concat(encodeParams(3, { A: '1', B: '2' })))
    assert.equal(small.length, 2, 'small pairs share one record')
  })

  test('values keep bytes as latin1 code points', () => {
    const pairs: [string, string][] = [['PATH_INFO', '/caf\u00c3\u00a9']]
    assert.deepEqual(decodeNameValuePairs(encodeNameValuePairs(pairs)), pairs)
  })

  test('truncated pairs, empty names and oversized streams are typed errors', () => {
    const bytes = encodeNameValuePairs([['NAME', 'value']])
    const d = new NameValueDecoder()
    d.feed(bytes.subarray(0, bytes.length - 1))
    assert.throws(() => d.end(), { code: 'FCGI_BAD_NAME_VALUE' })
    assert.throws(() => decodeNameValuePairs(Buffer.from([0, 1, 0x61])), { code: 'FCGI_BAD_NAME_VALUE' })
    const big = new NameValueDecoder(1000)
    // A 4-byte length announcing 2 GB must not make the decoder wait and buffer forever.
    big.feed(Buffer.from([0x80 | 0x7f, 0xff, 0xff, 0xff, 1]))
    assert.throws(() => big.feed(Buffer.alloc(1000)), { code: 'FCGI_PARAMS_TOO_LARGE' })
  })
})

describe('FastCGI codec properties (bounded fast-check)', () => {
  const recordArb = fc.record({
    type: fc.integer({ min: 1, max: 11 }),
    requestId: fc.integer({ min: 0, max: 0xffff }),
    content: fc.uint8Array({ maxLength: 300 }).map((a) => Buffer.from(a)),
  })

  test('encode then parse, at random splits, gives back the records', () => {
    fc.assert(
      fc.property(
        fc.array(recordArb, { maxLength: 8 }),
        fc.array(fc.nat(), { maxLength: 6 }),
        (records, cuts) => {
          const bytes = Buffer.concat(records.flatMap((r) => encodeRecord(r.type, r.requestId, r.content)))
          const splits = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b)
          const parsed = parseAll(bytes, splits)
          assert.deepEqual(
            parsed.map((r) => [r.type, r.requestId, r.content.toString('hex')]),
            records.map((r) => [r.type, r.requestId, r.content.toString('hex')]),
          )
        },
      ),
      { numRuns: 300 },
    )
  })

  test('random and mutated bytes: only typed errors, and bounded buffering', () => {
    const valid = sampleRequest()
    const mutated = fc
      .array(fc.tuple(fc.nat(valid.length - 1), fc.integer({ min: 0, max: 255 })), {
        minLength: 1,
        maxLength: 6,
      })
      .map((muts) => {
        const b = Buffer.from(valid)
        for (const [i, v] of muts) b[i] = v
        return b
      })
    const input = fc.oneof(
      fc.uint8Array({ maxLength: 2000 }).map((a) => Buffer.from(a)),
      mutated,
    )
    fc.assert(
      fc.property(input, fc.integer({ min: 1, max: 64 }), (bytes, step) => {
        const p = new RecordParser((r) => {
          if (r.type === RecordType.PARAMS) new NameValueDecoder(4096).feed(r.content)
          if (r.type === RecordType.BEGIN_REQUEST) decodeBeginRequest(r.content)
        })
        try {
          for (let i = 0; i < bytes.length; i += step) {
            p.feed(bytes.subarray(i, i + step))
            assert.ok(p.pending <= FCGI_HEADER_LEN + 0xffff + 0xff)
          }
        } catch (err) {
          assert.ok(err instanceof ProtocolError && err.protocol === 'fastcgi', `unexpected ${String(err)}`)
        }
      }),
      { numRuns: 500 },
    )
  })
})

describe('errors', () => {
  /** The ProtocolError `fn` throws. */
  function thrown(fn: () => unknown): ProtocolError {
    try {
      fn()
    } catch (err) {
      assert.ok(err instanceof ProtocolError, `unexpected ${String(err)}`)
      assert.equal(err.protocol, 'fastcgi')
      return err
    }
    assert.fail('no error')
  }

  test('the codec throws ProtocolError with its FCGI_* code', () => {
    assert.equal(
      thrown(() => new RecordParser(() => undefined).feed(Buffer.alloc(8))).code,
      'FCGI_BAD_VERSION',
    )
    assert.equal(thrown(() => decodeBeginRequest(Buffer.alloc(3))).code, 'FCGI_BAD_BODY')
    assert.equal(thrown(() => decodeEndRequest(Buffer.alloc(3))).code, 'FCGI_BAD_BODY')
    assert.equal(thrown(() => decodeNameValuePairs(Buffer.from([0, 1, 0x61]))).code, 'FCGI_BAD_NAME_VALUE')
    const big = new NameValueDecoder(10)
    assert.equal(
      thrown(() => big.feed(encodeNameValuePairs([['NAME', 'a long value']]))).code,
      'FCGI_PARAMS_TOO_LARGE',
    )
  })

  test('each edge maps it to its GH_ERR_* code, the ProtocolError as cause', () => {
    const tooLarge = new ProtocolError('fastcgi', 'FCGI_PARAMS_TOO_LARGE', 'params exceed 10 bytes')
    const badVersion = new ProtocolError('fastcgi', 'FCGI_BAD_VERSION', 'record version 2, expected 1')
    assert.equal(webServerErrorCode(tooLarge), 'GH_ERR_FASTCGI_PARAMS_TOO_LARGE')
    assert.equal(webServerErrorCode(badVersion), 'GH_ERR_FASTCGI_BAD_RECORD')
    const err = upstreamError('php-fpm', `${badVersion.code}: ${badVersion.message}`, badVersion)
    assert.equal(err.code, 'GH_ERR_FASTCGI_PROTOCOL')
    assert.equal(err.status, 502)
    assert.equal(err.cause, badVersion)
    assert.match(err.message, /php-fpm: FCGI_BAD_VERSION: record version 2/)
  })
})
