import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { describe, test } from 'node:test'
import fc from 'fast-check'
import { GatehouseError, ProtocolError } from '../../../src/core/errors.js'
import { workerError } from '../../../src/gateways/python/errors.js'
import {
  type AnyFrame,
  encodeFrame,
  encodeHttpRequest,
  FrameDecoder,
  FrameType,
  marshalDumps,
  marshalLoads,
  type MarshalValue,
} from '../../../src/gateways/python/codec.js'
import { PYTHON } from '../../support/helpers.js'

/** A bridge ProtocolError, which the worker connection makes a GH_ERR_WORKER_PROTOCOL. */
const isProtocolError = (err: unknown) => {
  if (!(err instanceof ProtocolError) || err.protocol !== 'bridge') return false
  const mapped = workerError(err)
  return mapped instanceof GatehouseError && mapped.code === 'GH_ERR_WORKER_PROTOCOL' && mapped.cause === err
}
/** A bridge ProtocolError with this protocol code. */
const isBridgeCode = (code: string) => (err: unknown) =>
  err instanceof ProtocolError && err.protocol === 'bridge' && err.code === code

/** Run Python with `code`, feeding stdin; returns stdout bytes. */
function python(code: string, input: Buffer): Buffer {
  const r = spawnSync(PYTHON, ['-c', code], { input, maxBuffer: 64 * 1024 * 1024 })
  assert.equal(r.status, 0, r.stderr?.toString())
  return r.stdout
}

const SAMPLE_FRAMES: AnyFrame[] = [
  {
    type: FrameType.HTTP_REQUEST,
    id: 7,
    environ: { REQUEST_METHOD: 'GET', PATH_INFO: '/caf\u00c3\u00a9', HTTP_X: 'x'.repeat(300), EMPTY: '' },
    body: Buffer.from('abc'),
    moreBody: true,
    responseWindow: 262144,
  },
  { type: FrameType.HTTP_BODY, id: 7, body: Buffer.alloc(700, 1), moreBody: false },
  { type: FrameType.HTTP_DISCONNECT, id: 7 },
  { type: FrameType.RESPONSE_CREDIT, id: 7, bytes: 65536 },
  { type: FrameType.WS_CONNECT, id: 8, scope: { type: 'websocket', path: '/ws', subprotocols: ['a', 'b'] } },
  { type: FrameType.WS_RECEIVE, id: 8, bytes: null, text: 'héllo ☃' },
  { type: FrameType.WS_DISCONNECT, id: 8, code: 1005 },
  { type: FrameType.LIFESPAN_STARTUP, id: 0, state: {} },
  { type: FrameType.LIFESPAN_SHUTDOWN, id: 0 },
  { type: FrameType.HELLO, id: 0, version: 1, pid: 1234, requestWindow: 262144, capacity: 4 },
  {
    type: FrameType.RESPONSE_START,
    id: 7,
    status: 200,
    reason: 'OK',
    headers: [
      ['Content-Type', 'text/plain'],
      ['Set-Cookie', 'a=1'],
      ['Set-Cookie', 'b=2'],
    ],
    body: Buffer.from('hello'),
    moreBody: false,
  },
  { type: FrameType.RESPONSE_BODY, id: 7, body: Buffer.alloc(0), moreBody: true },
  {
    type: FrameType.RESPONSE_FILE,
    id: 7,
    path: '/srv/x.txt',
    offset: 10,
    length: 5_000_000_000,
    dev: 2049,
    ino: 123456789012,
    moreBody: false,
  },
  { type: FrameType.REQUEST_CREDIT, id: 7, bytes: 1 },
  { type: FrameType.REQUEST_ERROR, id: 7, message: 'Traceback ...' },
  { type: FrameType.FINISHED, id: 7 },
  { type: FrameType.WS_ACCEPT, id: 8, subprotocol: 'a', headers: [['x-a', 'b']] },
  { type: FrameType.WS_SEND, id: 8, bytes: Buffer.from([0, 255]), text: null },
  { type: FrameType.WS_CLOSE, id: 8, code: 1000, reason: '' },
  { type: FrameType.LIFESPAN_RESULT, id: 0, phase: 'startup', ok: false, message: 'failed' },
]

function normalize(frame: AnyFrame): unknown {
  return JSON.parse(JSON.stringify(frame, (_k, v: unknown) => (Buffer.isBuffer(v) ? v.toString('hex') : v)))
}

function decodeAll(pieces: Buffer[], decoder = new FrameDecoder()): AnyFrame[] {
  const out: AnyFrame[] = []
  for (const p of pieces) out.push(...decoder.push(p))
  decoder.finish()
  return out
}

describe('bridge frames', () => {
  test('every frame type round-trips', () => {
    for (const frame of SAMPLE_FRAMES) {
      const [back] = decodeAll([encodeFrame(frame)])
      assert.deepEqual(normalize(back!), normalize(frame))
    }
  })

  test('a frame is u32le length then one marshal tuple', () => {
    const buf = encodeFrame({ type: FrameType.FINISHED, id: 3 })
    assert.equal(buf.readUInt32LE(0), buf.length - 4)
    // ')' small tuple of 2, 'i' int 70, 'i' int 3
    assert.deepEqual([...buf.subarray(4)], [0x29, 2, 0x69, 70, 0, 0, 0, 0x69, 3, 0, 0, 0])
  })

  test('encodeHttpRequest writes the same bytes as encodeFrame', () => {
    const environ = { REQUEST_METHOD: 'POST', PATH_INFO: '/\u00ff' }
    const a = encodeHttpRequest(9, environ, Buffer.from('xy'), false, 100)
    const b = encodeFrame({
      type: FrameType.HTTP_REQUEST,
      id: 9,
      environ,
      body: Buffer.from('xy'),
      moreBody: false,
      responseWindow: 100,
    })
    assert.ok(a.equals(b))
  })

  test('decoding survives a split at every offset', () => {
    const stream = Buffer.concat(SAMPLE_FRAMES.map(encodeFrame))
    const whole = decodeAll([stream]).map(normalize)
    for (let i = 0; i <= stream.length; i++) {
      const got = decodeAll([stream.subarray(0, i), stream.subarray(i)]).map(normalize)
      assert.deepEqual(got, whole, `split at ${i}`)
    }
  })

  test('any frames, split into any pieces, decode to the same frames (fast-check)', () => {
    const frameArb = fc.oneof(
      fc.record({
        type: fc.constant(FrameType.HTTP_BODY),
        id: fc.nat({ max: 0x7fffffff }),
        body: fc.uint8Array({ maxLength: 300 }).map((a) => Buffer.from(a)),
        moreBody: fc.boolean(),
      }),
      fc.record({
        type: fc.constant(FrameType.RESPONSE_START),
        id: fc.nat({ max: 0x7fffffff }),
        status: fc.integer({ min: 100, max: 999 }),
        reason: fc.string(),
        headers: fc.array(fc.tuple(fc.string(), fc.string({ unit: 'binary' })), { maxLength: 5 }),
        body: fc.uint8Array({ maxLength: 100 }).map((a) => Buffer.from(a)),
        moreBody: fc.boolean(),
      }),
      fc.record({
        type: fc.constant(FrameType.HTTP_REQUEST),
        id: fc.nat({ max: 0x7fffffff }),
        environ: fc.dictionary(fc.string({ minLength: 1 }), fc.string({ unit: 'binary' }), { maxKeys: 8 }),
        body: fc.uint8Array({ maxLength: 50 }).map((a) => Buffer.from(a)),
        moreBody: fc.boolean(),
        responseWindow: fc.nat({ max: 0x7fffffff }),
      }),
    )
    fc.assert(
      fc.property(
        fc.array(frameArb, { minLength: 1, maxLength: 5 }),
        fc.array(fc.nat(), { maxLength: 6 }),
        (frames, cuts) => {
          const stream = Buffer.concat(frames.map((f) => encodeFrame(f as AnyFrame)))
          const offsets = [...new Set(cuts.map((c) => c % (stream.length + 1)))].sort((a, b) => a - b)
          const pieces: Buffer[] = []
          let last = 0
          for (const o of offsets) {
            pieces.push(stream.subarray(last, o))
            last = o
          }
          pieces.push(stream.subarray(last))
          assert.deepEqual(
            decodeAll(pieces).map(normalize),
            frames.map((f) => normalize(f as AnyFrame)),
          )
        },
      ),
      { numRuns: 300 },
    )
  })

  test('a frame longer than the limit is refused from its length alone (bounded buffering)', () => {
    const decoder = new FrameDecoder({ maxFrameBytes: 1000 })
    const header = Buffer.alloc(4)
    header.writeUInt32LE(1001)
    assert.throws(() => decoder.push(header), isProtocolError)
    const ok = new FrameDecoder({ maxFrameBytes: 1000 })
    ok.push(
      encodeFrame({ type: FrameType.HTTP_BODY, id: 1, body: Buffer.alloc(900), moreBody: true }).subarray(
        0,
        500,
      ),
    )
    assert.ok(ok.buffered <= 1004)
  })

  test('malformed input is a typed error', () => {
    const frameOf = (payload: Buffer) => {
      const h = Buffer.alloc(4)
      h.writeUInt32LE(payload.length)
      return Buffer.concat([h, payload])
    }
    const bad = [
      Buffer.from([0, 0, 0, 0]), // empty frame
      frameOf(Buffer.from([0x4e])), // None, not a tuple
      frameOf(marshalDumps([99, 1])), // unknown type
      frameOf(marshalDumps([FrameType.HTTP_BODY, 1, 'not bytes', true])),
      frameOf(marshalDumps([FrameType.RESPONSE_START, 1, 200, 'OK', [['a']], Buffer.alloc(0), false])),
      frameOf(Buffer.from([0x29, 2, 0x69, 1, 0, 0])), // truncated int
      frameOf(Buffer.from([0x63])), // a code object
      frameOf(Buffer.from([0x72, 5, 0, 0, 0])), // back-reference to nothing
      frameOf(Buffer.from([0x29, 200])), // tuple count beyond the frame
    ]
    for (const input of bad)
      assert.throws(() => new FrameDecoder().push(input), isProtocolError, input.toString('hex'))
    const cut = new FrameDecoder()
    cut.push(encodeFrame({ type: FrameType.FINISHED, id: 1 }).subarray(0, 6))
    assert.throws(() => cut.finish(), isProtocolError)
    assert.throws(
      () => encodeFrame({ type: FrameType.REQUEST_CREDIT, id: 1, bytes: 2 ** 60 }),
      isProtocolError,
    )
  })

  test('each malformed input throws ProtocolError with its BRIDGE_* code', () => {
    const frameOf = (payload: Buffer) => {
      const h = Buffer.alloc(4)
      h.writeUInt32LE(payload.length)
      return Buffer.concat([h, payload])
    }
    const tooLong = Buffer.alloc(4)
    tooLong.writeUInt32LE(1001)
    const cases: [Buffer, string][] = [
      [Buffer.from([0, 0, 0, 0]), 'BRIDGE_EMPTY_FRAME'],
      [frameOf(Buffer.from([0x4e])), 'BRIDGE_BAD_FRAME'],
      [frameOf(marshalDumps([99, 1])), 'BRIDGE_UNKNOWN_FRAME'],
      [frameOf(Buffer.from([0x63])), 'BRIDGE_BAD_MARSHAL'],
      [frameOf(Buffer.from([0x29, 200])), 'BRIDGE_BAD_MARSHAL'],
    ]
    for (const [input, code] of cases)
      assert.throws(() => new FrameDecoder().push(input), isBridgeCode(code), code)
    assert.throws(
      () => new FrameDecoder({ maxFrameBytes: 1000 }).push(tooLong),
      isBridgeCode('BRIDGE_FRAME_TOO_LARGE'),
    )
    const cut = new FrameDecoder()
    cut.push(encodeFrame({ type: FrameType.FINISHED, id: 1 }).subarray(0, 6))
    assert.throws(() => cut.finish(), isBridgeCode('BRIDGE_TRUNCATED'))
    assert.throws(
      () => encodeFrame({ type: FrameType.REQUEST_CREDIT, id: 1, bytes: 2 ** 60 }),
      isBridgeCode('BRIDGE_BAD_VALUE'),
    )
  })
})

describe('marshal interop with the real CPython', () => {
  test("Python's marshal.loads reads what Node writes, latin-1 and Unicode strings intact", () => {
    const value: MarshalValue = [
      1,
      -2,
      0x7fffffff,
      null,
      true,
      false,
      'ascii',
      'caf\u00c3\u00a9',
      '☃ snow',
      'x'.repeat(300),
      Buffer.from([0, 1, 255]),
      { a: 'b', 'wsgi.url_scheme': 'https' },
      [],
      Array.from({ length: 300 }, (_, i) => i),
    ]
    const out = python(
      'import marshal,sys,json\nv=marshal.loads(sys.stdin.buffer.read())\n' +
        'def j(x):\n  if isinstance(x,bytes): return {"bytes":list(x)}\n  if isinstance(x,tuple): return [j(i) for i in x]\n  if isinstance(x,dict): return {k:j(w) for k,w in x.items()}\n  return x\n' +
        'sys.stdout.write(json.dumps(j(v)))',
      marshalDumps(value),
    )
    const back = JSON.parse(out.toString()) as unknown[]
    assert.deepEqual(back.slice(0, 10), value.slice(0, 10))
    assert.deepEqual(back[10], { bytes: [0, 1, 255] })
    assert.deepEqual(back[11], { a: 'b', 'wsgi.url_scheme': 'https' })
    assert.equal((back[13] as number[]).length, 300)
  })

  test('strings of any length and any code points reach Python intact (fast-check, one process)', () => {
    // Short ASCII strings take a JS fast path in the encoder (Writer.str); the others, and
    // the lengths around its limit, must come out the same.
    const strings = fc
      .sample(
        fc.oneof(
          fc.string({ maxLength: 70 }),
          fc.string({ unit: 'binary', maxLength: 70 }),
          fc.string({
            unit: fc.integer({ min: 0x20, max: 0xff }).map((c) => String.fromCharCode(c)),
            minLength: 60,
            maxLength: 70,
          }),
        ),
        { numRuns: 400, seed: 13 },
      )
      .filter((s) => !/[\ud800-\udfff]/.test(s))
    const out = python(
      'import marshal,sys,json\nsys.stdout.write(json.dumps(list(marshal.loads(sys.stdin.buffer.read()))))',
      marshalDumps(strings),
    )
    assert.deepEqual(JSON.parse(out.toString()), strings)
    for (const s of strings) assert.equal(marshalLoads(marshalDumps(s)), s)
  })

  test('Node reads what marshal.dumps writes (refs, short forms, lists, big ints)', () => {
    const out = python(
      'import marshal,sys\n' +
        's="shared"\n' +
        'v=(65,1,200,"OK",[("Content-Type","text/plain"),("X",s),("Y",s)],b"body",False,2**40,-(2**33),"\\u00e9\\u2603",(s,s),{"k":[1,2]})\n' +
        'sys.stdout.buffer.write(marshal.dumps(v))',
      Buffer.alloc(0),
    )
    const v = marshalLoads(out) as MarshalValue[]
    assert.deepEqual(v.slice(0, 4), [65, 1, 200, 'OK'])
    assert.deepEqual(v[4], [
      ['Content-Type', 'text/plain'],
      ['X', 'shared'],
      ['Y', 'shared'],
    ])
    assert.ok(Buffer.from('body').equals(v[5] as Buffer))
    assert.equal(v[6], false)
    assert.equal(v[7], 2 ** 40)
    assert.equal(v[8], -(2 ** 33))
    assert.equal(v[9], 'é☃')
    assert.deepEqual(v[10], ['shared', 'shared'])
    assert.deepEqual({ ...(v[11] as object) }, { k: [1, 2] })
  })
})
