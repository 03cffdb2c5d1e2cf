import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import fc from 'fast-check'
import { ProtocolError } from '../../../src/core/errors.js'
import {
  decodeUwsgiHeader,
  decodeUwsgiVars,
  encodeUwsgiHeader,
  encodeUwsgiPacket,
  encodeUwsgiVars,
  PLAIN_HTTP_DATASIZE,
  type UwsgiRequestEvent,
  UwsgiRequestParser,
} from '../../../src/gateways/uwsgi/codec.js'
import { packetError } from '../../../src/gateways/uwsgi/errors.js'

/** The codec throws a uwsgi ProtocolError; what the listener (and the client) make of it. */
const asEdge = (err: unknown) => {
  assert.ok(
    err instanceof ProtocolError && err.protocol === 'uwsgi',
    `not a uwsgi ProtocolError: ${String(err)}`,
  )
  return packetError(err)
}
/** The codec threw a uwsgi ProtocolError that the edges turn into `code`. */
const isCode = (code: string) => (err: unknown) => asEdge(err).code === code
/** The codec threw a uwsgi ProtocolError with this protocol code. */
const isProtocolCode = (code: string) => (err: unknown) =>
  err instanceof ProtocolError && err.protocol === 'uwsgi' && err.code === code

interface Parsed {
  vars: [string, string][]
  modifier1: number
  contentLength: number
  body: Buffer
  ended: boolean
}

/** Feed the pieces one by one and fold the events into one result. */
function parse(pieces: Buffer[], parser = new UwsgiRequestParser()): Parsed {
  const out: Parsed = { vars: [], modifier1: -1, contentLength: -1, body: Buffer.alloc(0), ended: false }
  const bodies: Buffer[] = []
  for (const piece of pieces) {
    for (const event of parser.push(piece) as UwsgiRequestEvent[]) {
      if (event.kind === 'request') {
        assert.equal(out.modifier1, -1, 'one request event')
        out.vars = event.vars
        out.modifier1 = event.header.modifier1
        out.contentLength = event.contentLength
      } else if (event.kind === 'body') {
        assert.ok(!out.ended, 'no body after end')
        bodies.push(Buffer.from(event.chunk))
      } else {
        assert.ok(!out.ended, 'one end event')
        out.ended = true
      }
    }
  }
  out.body = Buffer.concat(bodies)
  return out
}

const splitAt = (buf: Buffer, ...offsets: number[]) => {
  const pieces: Buffer[] = []
  let last = 0
  for (const o of offsets) {
    pieces.push(buf.subarray(last, o))
    last = o
  }
  pieces.push(buf.subarray(last))
  return pieces
}

describe('uwsgi header and vars encoding', () => {
  test('the header is modifier1, little-endian datasize, modifier2', () => {
    assert.deepEqual(
      [...encodeUwsgiHeader({ modifier1: 0, datasize: 0x1234, modifier2: 7 })],
      [0, 0x34, 0x12, 7],
    )
    assert.deepEqual(decodeUwsgiHeader(Buffer.from([5, 0xff, 0x00, 1])), {
      modifier1: 5,
      datasize: 255,
      modifier2: 1,
    })
  })

  test('vars are u16le key length, key, u16le value length, value', () => {
    const block = encodeUwsgiVars([
      ['AB', 'xyz'],
      ['C', ''],
    ])
    assert.deepEqual([...block], [2, 0, 65, 66, 3, 0, 120, 121, 122, 1, 0, 67, 0, 0])
    assert.deepEqual(decodeUwsgiVars(block), [
      ['AB', 'xyz'],
      ['C', ''],
    ])
    const packet = encodeUwsgiPacket([['AB', 'xyz']], { modifier1: 0, modifier2: 0 })
    assert.deepEqual([...packet.subarray(0, 4)], [0, 9, 0, 0])
  })

  test('a block of exactly 65535 bytes is encoded; one byte more is refused, never wrapped', () => {
    // 4 bytes of lengths + 1 byte of key + value
    const exact = encodeUwsgiVars([['K', 'v'.repeat(65535 - 5)]])
    assert.equal(exact.length, 65535)
    assert.equal(encodeUwsgiPacket([['K', 'v'.repeat(65535 - 5)]]).readUInt16LE(1), 65535)
    assert.throws(
      () => encodeUwsgiVars([['K', 'v'.repeat(65535 - 4)]]),
      isCode('GH_ERR_UWSGI_VARS_TOO_LARGE'),
    )
    // A single value past 65535 would wrap its own u16 length field: refused as well.
    assert.throws(() => encodeUwsgiVars([['K', Buffer.alloc(70_000)]]), isCode('GH_ERR_UWSGI_VARS_TOO_LARGE'))
    // Many small vars adding up past the limit.
    const many = Array.from({ length: 7000 }, (_, i) => [`HTTP_X_${i}`, 'value'] as const)
    assert.throws(() => encodeUwsgiVars(many), isCode('GH_ERR_UWSGI_VARS_TOO_LARGE'))
  })

  test('empty keys are refused on both sides', () => {
    assert.throws(() => encodeUwsgiVars([['', 'x']]), isCode('GH_ERR_UWSGI_PACKET'))
    assert.throws(() => decodeUwsgiVars(Buffer.from([0, 0, 1, 0, 120])), isCode('GH_ERR_UWSGI_PACKET'))
  })

  test('strings are bytes: latin1 passes through, wider characters are refused, Buffers are sent as is', () => {
    assert.deepEqual([...encodeUwsgiVars([['K', 'é']]).subarray(5)], [0xe9])
    assert.throws(() => encodeUwsgiVars([['K', '€']]), isCode('GH_ERR_UWSGI_PACKET'))
    assert.deepEqual([...encodeUwsgiVars([['K', Buffer.from('€')]]).subarray(5)], [0xe2, 0x82, 0xac])
  })

  test('a var running past the block is an error', () => {
    assert.throws(() => decodeUwsgiVars(Buffer.from([5, 0, 65])), isCode('GH_ERR_UWSGI_PACKET'))
    assert.throws(() => decodeUwsgiVars(Buffer.from([1, 0, 65, 9, 0, 1, 2])), isCode('GH_ERR_UWSGI_PACKET'))
    assert.throws(() => decodeUwsgiVars(Buffer.from([1])), isCode('GH_ERR_UWSGI_PACKET'))
  })
})

describe('UwsgiRequestParser', () => {
  const vars: [string, string][] = [
    ['REQUEST_METHOD', 'POST'],
    ['REQUEST_URI', '/a?b=1'],
    ['CONTENT_LENGTH', '11'],
    ['HTTP_COOKIE', 'a=1'],
    ['HTTP_COOKIE', 'b=2'],
  ]
  const body = Buffer.from('hello world')
  const packet = Buffer.concat([encodeUwsgiPacket(vars), body])

  test('a packet split at every offset, and byte by byte, parses the same', () => {
    const whole = parse([packet])
    assert.deepEqual(whole.vars, vars)
    assert.equal(whole.contentLength, 11)
    assert.equal(whole.body.toString(), 'hello world')
    assert.ok(whole.ended)
    for (let i = 0; i <= packet.length; i++)
      assert.deepEqual(parse(splitAt(packet, i)), whole, `split at ${i}`)
    assert.deepEqual(parse([...packet].map((b) => Buffer.from([b]))), whole)
  })

  test('a packet cut in three pieces anywhere parses the same', () => {
    const whole = parse([packet])
    for (let i = 0; i <= packet.length; i += 3) {
      for (let j = i; j <= packet.length; j += 5)
        assert.deepEqual(parse(splitAt(packet, i, j)), whole, `${i}/${j}`)
    }
  })

  test('no body: the request ends with its vars; bytes after a body are discarded', () => {
    const get = parse([encodeUwsgiPacket([['REQUEST_METHOD', 'GET']])])
    assert.ok(get.ended)
    assert.equal(get.contentLength, 0)
    const extra = parse([packet, Buffer.from('trailing garbage')])
    assert.equal(extra.body.toString(), 'hello world')
  })

  test('an empty vars block is a request with no vars', () => {
    const r = parse([Buffer.from([0, 0, 0, 0])])
    assert.deepEqual(r.vars, [])
    assert.ok(r.ended)
  })

  test('plain HTTP is recognised and named', () => {
    for (const line of [
      'GET / HTTP/1.1\r\n',
      'POST /x HTTP/1.1\r\n',
      'HEAD / HTTP/1.0\r\n',
      'PUT /x HTTP/1.1\r\n',
    ]) {
      assert.throws(
        () => new UwsgiRequestParser().push(Buffer.from(line)),
        (err: unknown) => isCode('GH_ERR_UWSGI_PLAIN_HTTP')(err) && /plain HTTP/.test(asEdge(err).message),
        line,
      )
    }
    const header = encodeUwsgiHeader({ modifier1: 0, datasize: PLAIN_HTTP_DATASIZE, modifier2: 0 })
    assert.throws(() => new UwsgiRequestParser().push(header), isCode('GH_ERR_UWSGI_PLAIN_HTTP'))
  })

  test('modifier1 other than 0 is refused as soon as the header arrives', () => {
    const parser = new UwsgiRequestParser()
    assert.throws(
      () => parser.push(Buffer.from([5, 10, 0, 0])),
      (err: unknown) => isCode('GH_ERR_UWSGI_MODIFIER')(err) && /\b5\b/.test(asEdge(err).message),
    )
    assert.deepEqual(
      parse(
        [encodeUwsgiPacket([['A', 'b']], { modifier1: 5 })],
        new UwsgiRequestParser({ modifier1: [0, 5] }),
      ).vars,
      [['A', 'b']],
    )
  })

  test('a vars block over the limit is refused from its header, before the block arrives', () => {
    const parser = new UwsgiRequestParser({ maxVarsBytes: 4096 })
    assert.throws(
      () => parser.push(encodeUwsgiHeader({ modifier1: 0, datasize: 4097, modifier2: 0 })),
      isCode('GH_ERR_UWSGI_VARS_TOO_LARGE'),
    )
    assert.deepEqual(
      parse([encodeUwsgiPacket([['K', 'v'.repeat(4091)]])], new UwsgiRequestParser({ maxVarsBytes: 4096 }))
        .vars[0]![1].length,
      4091,
    )
  })

  test('bad CONTENT_LENGTH vars are refused', () => {
    for (const v of [
      [['CONTENT_LENGTH', '12x']],
      [['CONTENT_LENGTH', '-1']],
      [
        ['CONTENT_LENGTH', '1'],
        ['CONTENT_LENGTH', '2'],
      ],
    ] as [string, string][][]) {
      assert.throws(
        () => new UwsgiRequestParser().push(encodeUwsgiPacket(v)),
        isCode('GH_ERR_UWSGI_PACKET'),
        JSON.stringify(v),
      )
    }
    assert.equal(parse([encodeUwsgiPacket([['CONTENT_LENGTH', '']])]).contentLength, 0)
  })

  test('a connection closed early is reported with what was missing', () => {
    const cases: [Buffer, RegExp][] = [
      [Buffer.alloc(0), /before a request/],
      [Buffer.from([0, 10]), /truncated header/],
      [packet.subarray(0, 10), /truncated vars block/],
      [packet.subarray(0, packet.length - 3), /3 bytes short/],
    ]
    for (const [bytes, message] of cases) {
      const parser = new UwsgiRequestParser()
      parser.push(bytes)
      assert.throws(
        () => parser.finish(),
        (err: unknown) => isCode('GH_ERR_UWSGI_PACKET')(err) && message.test(asEdge(err).message),
      )
    }
    const parser = new UwsgiRequestParser()
    parser.push(packet)
    parser.finish()
  })

  test('property: any vars and body survive encoding and parsing at random split points', () => {
    const latin1 = (min: number, max: number) =>
      fc.uint8Array({ minLength: min, maxLength: max }).map((a) => Buffer.from(a).toString('latin1'))
    fc.assert(
      fc.property(
        fc.array(fc.tuple(latin1(1, 40), latin1(0, 300)), { maxLength: 30 }),
        fc.uint8Array({ maxLength: 2000 }),
        fc.array(fc.nat(), { maxLength: 6 }),
        (pairs, bodyBytes, cuts) => {
          const clean = pairs.filter(([k]) => k !== 'CONTENT_LENGTH')
          const all: [string, string][] = [...clean, ['CONTENT_LENGTH', String(bodyBytes.length)]]
          const wire = Buffer.concat([encodeUwsgiPacket(all), Buffer.from(bodyBytes)])
          const offsets = [...new Set(cuts.map((c) => c % (wire.length + 1)))].sort((a, b) => a - b)
          const r = parse(splitAt(wire, ...offsets))
          assert.deepEqual(r.vars, all)
          assert.ok(r.ended)
          assert.ok(r.body.equals(Buffer.from(bodyBytes)))
        },
      ),
      { numRuns: 300 },
    )
  })

  test('property: random bytes never crash the parser with anything but a uwsgi ProtocolError', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), fc.nat(), fc.boolean(), (bytes, cut, asWsgi) => {
        // Half the inputs get a modifier1 of 0 so that the vars decoder is exercised too.
        const buf = Buffer.concat([Buffer.from(asWsgi ? [0] : []), Buffer.from(bytes)])
        const parser = new UwsgiRequestParser({ maxVarsBytes: 200 })
        try {
          for (const piece of splitAt(buf, cut % (buf.length + 1))) parser.push(piece)
          parser.finish()
        } catch (err) {
          assert.ok(err instanceof ProtocolError && err.protocol === 'uwsgi', String(err))
        }
      }),
      { numRuns: 500 },
    )
  })
})

describe('errors', () => {
  test('the codec throws ProtocolError with its UWSGI_* code', () => {
    const cases: [() => unknown, string][] = [
      [() => encodeUwsgiVars([['', 'x']]), 'UWSGI_BAD_VAR'],
      [() => encodeUwsgiVars([['K', '€']]), 'UWSGI_BAD_VAR'],
      [() => decodeUwsgiVars(Buffer.from([5, 0, 65])), 'UWSGI_BAD_VAR'],
      [() => encodeUwsgiVars([['K', Buffer.alloc(70_000)]]), 'UWSGI_VARS_TOO_LARGE'],
      [() => new UwsgiRequestParser().push(Buffer.from('GET / HTTP/1.1\r\n')), 'UWSGI_PLAIN_HTTP'],
      [() => new UwsgiRequestParser().push(Buffer.from([5, 10, 0, 0])), 'UWSGI_BAD_MODIFIER'],
      [
        () => new UwsgiRequestParser({ maxVarsBytes: 10 }).push(Buffer.from([0, 11, 0, 0])),
        'UWSGI_VARS_TOO_LARGE',
      ],
      [
        () => new UwsgiRequestParser().push(encodeUwsgiPacket([['CONTENT_LENGTH', '12x']])),
        'UWSGI_BAD_CONTENT_LENGTH',
      ],
      [() => new UwsgiRequestParser().finish(), 'UWSGI_TRUNCATED'],
    ]
    for (const [fn, code] of cases) assert.throws(fn, isProtocolCode(code), code)
  })

  test('the edges map each code to its GH_ERR_* code, the ProtocolError as cause, the message kept', () => {
    const expected: [string, string, number][] = [
      ['UWSGI_BAD_VAR', 'GH_ERR_UWSGI_PACKET', 400],
      ['UWSGI_BAD_CONTENT_LENGTH', 'GH_ERR_UWSGI_PACKET', 400],
      ['UWSGI_TRUNCATED', 'GH_ERR_UWSGI_PACKET', 400],
      ['UWSGI_PLAIN_HTTP', 'GH_ERR_UWSGI_PLAIN_HTTP', 400],
      ['UWSGI_BAD_MODIFIER', 'GH_ERR_UWSGI_MODIFIER', 501],
      ['UWSGI_VARS_TOO_LARGE', 'GH_ERR_UWSGI_VARS_TOO_LARGE', 431],
    ]
    for (const [protocolCode, code, status] of expected) {
      const cause = new ProtocolError('uwsgi', protocolCode, 'detail')
      const err = packetError(cause)
      assert.equal(err.code, code, protocolCode)
      assert.equal(err.status, status, protocolCode)
      assert.equal(err.cause, cause)
      assert.match(err.message, /: detail$/)
    }
  })
})
