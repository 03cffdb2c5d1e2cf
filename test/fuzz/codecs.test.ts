/**
 * Fuzzing the decoders (issue 18): random bytes and mutations of valid messages (bytes
 * flipped, set, inserted, deleted, the message truncated), fed in random pieces. Each
 * decoder may only fail with its own typed error, must stay bounded in time, and valid
 * input must round-trip where an encoder exists. The per-module tests already cover plain
 * random bytes for some of these; what is added here is the mutated valid messages, the
 * insert/delete/truncate mutations, finish() at the end, and the decoders they left out.
 * Seeds and run counts: test/support/fuzz.ts.
 */
import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import fc from 'fast-check'
import { CgiResponseParser } from '../../src/cgi-vars/response.js'
import { ProtocolError } from '../../src/core/errors.js'
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
  FCGI_HEADER_LEN,
  type FcgiRecord,
  NameValueDecoder,
  RecordParser,
  RecordType,
  Role,
} from '../../src/gateways/fastcgi/codec.js'
import { type AnyFrame, encodeFrame, FrameDecoder, FrameType } from '../../src/gateways/python/codec.js'
import {
  encodeUwsgiPacket,
  UwsgiRequestParser,
  type UwsgiRequestEvent,
} from '../../src/gateways/uwsgi/codec.js'
import { HttpResponseParser } from '../../src/gateways/uwsgi/http-response.js'
import { cutsArb, fuzzParams, inputArb, mutate, mutationArb, pieces } from '../support/fuzz.js'

const params = <Ts>(name: string, numRuns = 1000) => fuzzParams<Ts>(name, { file: import.meta.url, numRuns })

/** A case that takes this long on a few KiB is a hang (or a quadratic blow-up) to report. */
const CASE_MS = 2_000

/** Run `fn`; anything thrown must pass `typed`; and it must not take CASE_MS. */
function onlyTyped(fn: () => void, typed: (err: unknown) => boolean): void {
  const started = Date.now()
  try {
    fn()
  } catch (err) {
    if (!typed(err)) throw err
  }
  const took = Date.now() - started
  assert.ok(took < CASE_MS, `took ${took} ms`)
}

const protocolIs =
  (...protocols: string[]) =>
  (err: unknown): boolean =>
    err instanceof ProtocolError && protocols.includes(err.protocol)

const latin1 = (min: number, max: number) =>
  fc.uint8Array({ minLength: min, maxLength: max }).map((a) => Buffer.from(a).toString('latin1'))

// ---------------------------------------------------------------------------------------

describe('fuzz: FastCGI', () => {
  const pairsArb = fc.array(fc.tuple(latin1(1, 40), latin1(0, 200)), { maxLength: 12 })

  /** A whole request as a web server sends it: BEGIN_REQUEST, PARAMS, STDIN, with a reply's records too. */
  const messageArb = fc
    .tuple(fc.integer({ min: 1, max: 0xffff }), pairsArb, fc.uint8Array({ maxLength: 300 }), fc.boolean())
    .map(([id, pairs, body, keep]) =>
      Buffer.concat([
        ...encodeBeginRequest(id, Role.RESPONDER, keep),
        ...encodeParams(id, pairs),
        ...encodeStream(RecordType.STDIN, id, Buffer.from(body)),
        ...encodeRecord(RecordType.STDIN, id),
        ...encodeStream(RecordType.STDOUT, id, Buffer.from(body)),
        ...encodeEndRequest(id, 0, 0),
      ]),
    )

  test('records of a mutated request: a fastcgi ProtocolError or records, bounded buffering', () => {
    fc.assert(
      fc.property(inputArb(messageArb), cutsArb, (bytes, cuts) => {
        onlyTyped(() => {
          const params = new Map<number, NameValueDecoder>()
          const p = new RecordParser((r: FcgiRecord) => {
            assert.ok(r.content.length <= 0xffff)
            // Every record body the listener or the client would decode, decoded.
            if (r.type === RecordType.BEGIN_REQUEST) decodeBeginRequest(r.content)
            if (r.type === RecordType.END_REQUEST) decodeEndRequest(r.content)
            if (r.type === RecordType.PARAMS) {
              const d = params.get(r.requestId) ?? new NameValueDecoder(64 * 1024)
              params.set(r.requestId, d)
              if (r.content.length === 0) d.end()
              else d.feed(r.content)
            }
          })
          for (const piece of pieces(bytes, cuts)) {
            p.feed(piece)
            assert.ok(p.pending <= FCGI_HEADER_LEN + 0xffff + 0xff, `${p.pending} bytes held`)
          }
        }, protocolIs('fastcgi'))
      }),
      params('records of a mutated request: a fastcgi ProtocolError or records, bounded buffering'),
    )
  })

  test('name-value pairs round-trip at any split, and mutated blocks fail typed', () => {
    fc.assert(
      fc.property(pairsArb, cutsArb, fc.array(mutationArb, { maxLength: 4 }), (pairs, cuts, muts) => {
        const block = encodeNameValuePairs(pairs)
        const d = new NameValueDecoder()
        for (const piece of pieces(block, cuts)) d.feed(piece)
        assert.deepEqual(d.end(), pairs)
        assert.deepEqual(decodeNameValuePairs(block, block.length), pairs)
        if (muts.length === 0) return
        onlyTyped(() => {
          const m = new NameValueDecoder(8192)
          for (const piece of pieces(mutate(block, muts), cuts)) m.feed(piece)
          for (const [name] of m.end()) assert.ok(name.length > 0)
        }, protocolIs('fastcgi'))
      }),
      params('name-value pairs round-trip at any split, and mutated blocks fail typed'),
    )
  })
})

describe('fuzz: uwsgi', () => {
  const varsArb = fc.array(fc.tuple(latin1(1, 30), latin1(0, 120)), { maxLength: 16 })
  const packetArb = fc
    .tuple(varsArb, fc.uint8Array({ maxLength: 300 }))
    .map(([vars, body]) =>
      Buffer.concat([
        encodeUwsgiPacket([
          ...vars.filter(([n]) => n !== 'CONTENT_LENGTH'),
          ['CONTENT_LENGTH', String(body.length)],
        ]),
        body,
      ]),
    )

  test('a mutated packet: a uwsgi ProtocolError or consistent events, finish() included', () => {
    fc.assert(
      fc.property(inputArb(packetArb), cutsArb, fc.boolean(), (bytes, cuts, small) => {
        onlyTyped(() => {
          const p = new UwsgiRequestParser(small ? { maxVarsBytes: 512 } : {})
          const events: UwsgiRequestEvent[] = []
          for (const piece of pieces(bytes, cuts)) events.push(...p.push(piece))
          // At most one request, body no longer than it said, one end after it.
          const kinds = events.map((e) => e.kind).join(' ')
          assert.match(kinds, /^(request( body)*( end)?)?$/)
          const request = events.find((e) => e.kind === 'request')
          const bodyBytes = events.reduce((n, e) => n + (e.kind === 'body' ? e.chunk.length : 0), 0)
          if (request) assert.ok(bodyBytes <= request.contentLength)
          p.finish()
          assert.ok(p.complete)
        }, protocolIs('uwsgi'))
      }),
      params('a mutated packet: a uwsgi ProtocolError or consistent events, finish() included'),
    )
  })
})

describe('fuzz: the Python bridge frame decoder', () => {
  const bytesArb = fc.uint8Array({ maxLength: 100 }).map((a) => Buffer.from(a))
  const id = fc.nat({ max: 0x7fffffff })
  const frameArb: fc.Arbitrary<AnyFrame> = fc.oneof(
    fc.record({ type: fc.constant(FrameType.HTTP_BODY), id, body: bytesArb, moreBody: fc.boolean() }),
    fc.record({
      type: fc.constant(FrameType.RESPONSE_START),
      id,
      status: fc.integer({ min: 100, max: 599 }),
      reason: fc.string({ maxLength: 20 }),
      headers: fc.array(fc.tuple(fc.string({ maxLength: 10 }), fc.string({ maxLength: 20 })), {
        maxLength: 4,
      }),
      body: bytesArb,
      moreBody: fc.boolean(),
    }),
    fc.record({
      type: fc.constant(FrameType.HTTP_REQUEST),
      id,
      environ: fc.dictionary(fc.string({ minLength: 1, maxLength: 10 }), fc.string({ maxLength: 20 }), {
        maxKeys: 6,
      }),
      body: bytesArb,
      moreBody: fc.boolean(),
      responseWindow: fc.nat({ max: 0x7fffffff }),
    }),
    fc.record({ type: fc.constant(FrameType.RESPONSE_BODY), id, body: bytesArb, moreBody: fc.boolean() }),
    fc.record({ type: fc.constant(FrameType.REQUEST_ERROR), id, message: fc.string({ maxLength: 40 }) }),
    fc.record({ type: fc.constant(FrameType.FINISHED), id }),
    fc.record({
      type: fc.constant(FrameType.WS_CLOSE),
      id,
      code: fc.integer({ min: 1000, max: 4999 }),
      reason: fc.string({ maxLength: 20 }),
    }),
  ) as fc.Arbitrary<AnyFrame>
  const streamArb = fc
    .array(frameArb, { minLength: 1, maxLength: 4 })
    .map((frames) => Buffer.concat(frames.map(encodeFrame)))

  test('mutated frame streams: a bridge ProtocolError or frames, finish() included', () => {
    fc.assert(
      fc.property(inputArb(streamArb, 600), cutsArb, (bytes, cuts) => {
        onlyTyped(() => {
          // A small limit, so a mutated length prefix is refused rather than waited for.
          const d = new FrameDecoder({ maxFrameBytes: 64 * 1024 })
          for (const piece of pieces(bytes, cuts)) {
            for (const frame of d.push(piece)) assert.equal(typeof frame.type, 'number')
            assert.ok(d.buffered <= 4 + 64 * 1024)
          }
          d.finish()
        }, protocolIs('bridge'))
      }),
      params('mutated frame streams: a bridge ProtocolError or frames, finish() included'),
    )
  })
})

describe('fuzz: the CGI response header parser', () => {
  const name = fc.constantFrom(
    'Content-Type',
    'Status',
    'Location',
    'Content-Length',
    'Set-Cookie',
    'X-A',
    'Connection',
  )
  const value = fc.stringMatching(/^[!-~]([ !-~]{0,20}[!-~])?$/)
  const blockArb = fc
    .tuple(fc.array(fc.tuple(name, value), { maxLength: 8 }), fc.boolean(), fc.uint8Array({ maxLength: 64 }))
    .map(([fields, crlf, body]) => {
      const eol = crlf ? '\r\n' : '\n'
      const head = ['Content-Type: text/plain', ...fields.map(([n, v]) => `${n}: ${v}`)].join(eol) + eol + eol
      return Buffer.concat([Buffer.from(head, 'latin1'), body])
    })

  test('random and mutated header blocks: never a throw; a refusal is a cgi ProtocolError', () => {
    fc.assert(
      fc.property(inputArb(blockArb, 600), cutsArb, fc.boolean(), (bytes, cuts, small) => {
        // This parser throws nothing at all: a refusal is a returned value.
        onlyTyped(
          () => {
            const p = new CgiResponseParser(small ? { maxHeaderBytes: 64 } : {})
            let done = false
            for (const piece of pieces(bytes, cuts)) {
              const r = p.push(piece)
              if (r.type === 'error') {
                assert.ok(r.error instanceof ProtocolError && r.error.protocol === 'cgi', String(r.error))
                return
              }
              if (r.type === 'complete') {
                done = true
                assert.ok(r.head.status >= 200 && r.head.status <= 599, `status ${r.head.status}`)
              }
              if (r.type === 'body') assert.ok(done, 'body before the head')
            }
            const end = p.end()
            assert.ok(end === null || (end instanceof ProtocolError && end.protocol === 'cgi'), String(end))
            assert.equal(end === null, done)
          },
          () => false,
        )
      }),
      params('random and mutated header blocks: never a throw; a refusal is a cgi ProtocolError'),
    )
  })
})

describe('fuzz: the uwsgi client HTTP/1 response parser', () => {
  const headerArb = fc.tuple(
    fc.constantFrom('Content-Type', 'X-A', 'Set-Cookie', 'Connection', 'Trailer'),
    fc.stringMatching(/^[!-~]{0,16}$/),
  )
  const responseArb = fc
    .tuple(
      fc.constantFrom(200, 201, 204, 304, 404, 500, 100),
      fc.array(headerArb, { maxLength: 5 }),
      fc.array(fc.uint8Array({ minLength: 1, maxLength: 80 }), { maxLength: 4 }),
      fc.constantFrom('length', 'chunked', 'close'),
    )
    .map(([status, headers, chunks, framing]) => {
      const body = Buffer.concat(chunks)
      const head = [`HTTP/1.1 ${status} Whatever`, ...headers.map(([n, v]) => `${n}: ${v}`)]
      if (framing === 'length') head.push(`Content-Length: ${body.length}`)
      if (framing === 'chunked') head.push('Transfer-Encoding: chunked')
      const parts = [Buffer.from(head.join('\r\n') + '\r\n\r\n', 'latin1')]
      if (framing === 'chunked') {
        for (const c of chunks)
          parts.push(Buffer.from(`${c.length.toString(16)};x=y\r\n`), Buffer.from(c), Buffer.from('\r\n'))
        parts.push(Buffer.from('0\r\nX-T: 1\r\n\r\n'))
      } else parts.push(body)
      return Buffer.concat(parts)
    })

  test('mutated responses: an http or chunked ProtocolError, or one head and one end', () => {
    fc.assert(
      fc.property(inputArb(responseArb, 600), cutsArb, fc.boolean(), (bytes, cuts, head) => {
        onlyTyped(
          () => {
            const p = new HttpResponseParser({ noBody: head, maxHeaderBytes: 1024, maxHeaders: 8 })
            const kinds: string[] = []
            for (const piece of pieces(bytes, cuts)) kinds.push(...p.push(piece).map((e) => e.kind))
            kinds.push(...p.finish().map((e) => e.kind))
            assert.match(kinds.join(' '), /^head( body)* end$/)
          },
          protocolIs('http', 'chunked'),
        )
      }),
      params('mutated responses: an http or chunked ProtocolError, or one head and one end'),
    )
  })
})
