/**
 * Fuzzing the app-side listeners over real sockets (issue 18): a Gatehouse with
 * fastcgi_listen and uwsgi_listen on loopback; each case opens a connection, writes random
 * bytes or a mutated valid request in random pieces, then half-closes, aborts, or lingers
 * briefly. After every case a well-formed request on a fresh connection must be answered,
 * and every few cases one on a connection opened before them (another client is not
 * disturbed). Whatever the listener writes back must itself be well-formed, and nothing
 * may throw uncaught in the server (it runs in this process). Seeds and run counts:
 * test/support/fuzz.ts.
 */
import assert from 'node:assert/strict'
import { once } from 'node:events'
import { connect, type Socket } from 'node:net'
import { describe, test } from 'node:test'
import fc from 'fast-check'
import {
  encodeBeginRequest,
  encodeParams,
  encodeRecord,
  encodeStream,
  type FcgiRecord,
  RecordParser,
  RecordType,
  Role,
} from '../../src/gateways/fastcgi/codec.js'
import { encodeUwsgiPacket } from '../../src/gateways/uwsgi/codec.js'
import { cutsArb, fuzzParams, inputArb, pieces } from '../support/fuzz.js'
import { startGatehouse } from '../support/helpers.js'

const CASES = 150
/** Wall-clock bound of one listener's property in the default run. */
const LIMIT_MS = 15_000
/** How long a case waits for the listener to answer or close. */
const CASE_WAIT_MS = 200
/** The held connection is checked (and, for uwsgi, replaced) every this many cases. */
const HELD_EVERY = 5

const params = <Ts>(name: string) =>
  fuzzParams<Ts>(name, { file: import.meta.url, numRuns: CASES, timeLimitMs: LIMIT_MS })

const ROUTES = [{ exact: '/ok', return: { body: 'ok' } }]

type Pairs = [string, string][]
type Ending = 'end' | 'abort' | 'linger'
const endingArb = fc.constantFrom<Ending>('end', 'end', 'end', 'abort', 'linger')

const pairsArb = fc.array(
  fc.tuple(
    fc.constantFrom(
      'HTTP_X_A',
      'QUERY_STRING',
      'CONTENT_TYPE',
      'HTTP_COOKIE',
      'SCRIPT_NAME',
      'PATH_INFO',
      'HTTPS',
    ),
    fc.uint8Array({ maxLength: 60 }).map((a) => Buffer.from(a).toString('latin1')),
  ),
  { maxLength: 5 },
)
const methodArb = fc.constantFrom('GET', 'POST', 'HEAD', 'PUT', 'OPTIONS')
const uriArb = fc.constantFrom('/ok', '/ok?x=1', '/missing', '/%2e%2e/etc', '//ok', '*', '')

function head(method: string, uri: string, body: number, extra: Pairs): Pairs {
  return [
    ['REQUEST_METHOD', method],
    ['REQUEST_URI', uri],
    ['SERVER_PROTOCOL', 'HTTP/1.1'],
    ['HTTP_HOST', 'example.com'],
    ['REMOTE_ADDR', '127.0.0.1'],
    ['REMOTE_PORT', '40000'],
    ['SERVER_PORT', '80'],
    ['CONTENT_LENGTH', String(body)],
    ...extra,
  ]
}

/**
 * Write `chunks` on a fresh connection, then end it as the case says; resolves with what the
 * listener wrote back once it closed, or after CASE_WAIT_MS.
 */
async function blast(port: number, chunks: Buffer[], ending: Ending): Promise<Buffer> {
  const socket = connect(port, '127.0.0.1')
  const reply: Buffer[] = []
  socket.on('data', (c: Buffer) => reply.push(c))
  // The listener may close or reset at the first bad byte: write errors are expected.
  socket.on('error', () => {})
  const closed = once(socket, 'close')
  await Promise.race([once(socket, 'connect'), closed])
  for (const c of chunks) if (!socket.destroyed && c.length > 0) socket.write(c)
  if (ending === 'abort') socket.destroy()
  else if (ending === 'end') socket.end()
  const timer = setTimeout(() => socket.destroy(), CASE_WAIT_MS)
  await closed
  clearTimeout(timer)
  return Buffer.concat(reply)
}

/**
 * Run `fn` with uncaught exceptions captured rather than ending the process: `check()`
 * throws the first one inside the property, so fast-check reports it with its seed and
 * case (the test runner's own handler would fail the test with neither).
 */
async function capturingCrashes(fn: (check: () => void) => Promise<void>): Promise<void> {
  const crashes: unknown[] = []
  process.setUncaughtExceptionCaptureCallback((err) => crashes.push(err))
  try {
    await fn(() => {
      if (crashes.length > 0)
        throw new Error('the server threw an uncaught exception', { cause: crashes.splice(0)[0] })
    })
  } finally {
    process.setUncaughtExceptionCaptureCallback(null)
  }
}

// ---------------------------------------------------------------------------------------
// FastCGI

function fcgiRequest(
  id: number,
  pairs: Pairs,
  body: Buffer,
  keepConn: boolean,
  role: number = Role.RESPONDER,
) {
  return Buffer.concat([
    ...encodeBeginRequest(id, role, keepConn),
    ...encodeParams(id, pairs),
    ...(body.length > 0 ? encodeStream(RecordType.STDIN, id, body) : []),
    ...encodeRecord(RecordType.STDIN, id),
  ])
}

/** A FastCGI connection read record by record. */
class FcgiConn {
  readonly records: FcgiRecord[] = []
  closed = false
  private wake: (() => void) | null = null
  private constructor(readonly socket: Socket) {
    const parser = new RecordParser((r) => {
      this.records.push({ ...r, content: Buffer.from(r.content) })
      this.wake?.()
    })
    socket.on('data', (c: Buffer) => parser.feed(c))
    socket.on('error', () => {})
    socket.on('close', () => {
      this.closed = true
      this.wake?.()
    })
  }

  static async open(port: number): Promise<FcgiConn> {
    const socket = connect(port, '127.0.0.1')
    await once(socket, 'connect')
    return new FcgiConn(socket)
  }

  /** GET /ok as request `id`; the response body, checked to be a 200 'ok'. */
  async get(id: number, keepConn: boolean): Promise<void> {
    this.records.length = 0
    this.socket.write(fcgiRequest(id, head('GET', '/ok', 0, []), Buffer.alloc(0), keepConn))
    const deadline = Date.now() + 5_000
    const done = () => this.records.some((r) => r.type === RecordType.END_REQUEST && r.requestId === id)
    while (!done()) {
      assert.ok(!this.closed, `connection closed before END_REQUEST ${id}`)
      assert.ok(Date.now() < deadline, `no END_REQUEST ${id} within 5 s`)
      await new Promise<void>((resolve) => {
        this.wake = resolve
        setTimeout(resolve, 100)
      })
    }
    const stdout = Buffer.concat(
      this.records.filter((r) => r.type === RecordType.STDOUT && r.requestId === id).map((r) => r.content),
    ).toString('latin1')
    assert.match(stdout, /^Status: 200 OK\r\n[^]*\r\n\r\nok$/)
  }
}

// ---------------------------------------------------------------------------------------
// uwsgi

function uwsgiRequest(pairs: Pairs, body: Buffer): Buffer {
  return Buffer.concat([encodeUwsgiPacket(pairs), body])
}

const UWSGI_OK = uwsgiRequest(head('GET', '/ok', 0, []), Buffer.alloc(0))

/** A uwsgi request on its own connection, written in two parts: the second on `finish()`. */
class UwsgiHeld {
  private readonly reply: Buffer[] = []
  private readonly closed: Promise<unknown>
  private constructor(private readonly socket: Socket) {
    socket.on('data', (c: Buffer) => this.reply.push(c))
    socket.on('error', () => {})
    this.closed = once(socket, 'close')
  }

  /** Open a connection and write the header and half the vars of GET /ok. */
  static async open(port: number): Promise<UwsgiHeld> {
    const socket = connect(port, '127.0.0.1')
    await once(socket, 'connect')
    socket.write(UWSGI_OK.subarray(0, UWSGI_OK.length >> 1))
    return new UwsgiHeld(socket)
  }

  /** Write the rest; the reply must be 200 'ok'. */
  async finish(): Promise<void> {
    this.socket.write(UWSGI_OK.subarray(UWSGI_OK.length >> 1))
    const timer = setTimeout(() => this.socket.destroy(), 5_000)
    await this.closed
    clearTimeout(timer)
    assert.match(Buffer.concat(this.reply).toString('latin1'), /^HTTP\/1\.1 200 OK\r\n[^]*\r\n\r\nok$/)
  }
}

// ---------------------------------------------------------------------------------------

describe('fuzz: the listeners over real sockets', () => {
  test('fastcgi_listen: random and mutated records; other clients still served', async (t) => {
    const { gatehouse } = await startGatehouse(t, { fastcgi_listen: ['127.0.0.1:0'], routes: ROUTES })
    const port = gatehouse.fastcgiAddresses()[0]!.port!
    // A FCGI_KEEP_CONN connection opened before the fuzzing, used every few cases.
    const held = await FcgiConn.open(port)
    t.after(() => held.socket.destroy())
    await held.get(1, true)
    let heldId = 1
    let cases = 0

    const valid = fc
      .tuple(
        fc.integer({ min: 1, max: 0xffff }),
        methodArb,
        uriArb,
        pairsArb,
        fc.uint8Array({ maxLength: 200 }).map((a) => Buffer.from(a)),
        fc.boolean(),
        fc.constantFrom<number>(Role.RESPONDER, Role.RESPONDER, Role.AUTHORIZER, Role.FILTER, 0),
      )
      .map(([id, method, uri, extra, body, keep, role]) =>
        fcgiRequest(id, head(method, uri, body.length, extra), body, keep, role),
      )
    await capturingCrashes((check) =>
      fc.assert(
        fc.asyncProperty(inputArb(valid, 600), cutsArb, endingArb, async (bytes, cuts, ending) => {
          const reply = await blast(port, pieces(bytes, cuts), ending)
          check()
          // What the listener wrote back is FastCGI records (or nothing).
          new RecordParser(() => {}).feed(reply)
          const fresh = await FcgiConn.open(port)
          try {
            await fresh.get(1, false)
          } finally {
            fresh.socket.destroy()
          }
          if (++cases % HELD_EVERY === 0) {
            heldId = (heldId % 0xfffe) + 1
            await held.get(heldId, true)
          }
          check()
        }),
        params('fastcgi_listen: random and mutated records; other clients still served'),
      ),
    )
    await held.get((heldId % 0xfffe) + 1, true)
  })

  test('uwsgi_listen: random and mutated packets; other clients still served', async (t) => {
    const { gatehouse } = await startGatehouse(t, { uwsgi_listen: ['127.0.0.1:0'], routes: ROUTES })
    const port = gatehouse.uwsgiAddresses()[0]!.port!
    // uwsgi has one request per connection: the held one is a request half-written before
    // the cases, finished after them, then replaced.
    let held = await UwsgiHeld.open(port)
    let cases = 0

    const valid = fc
      .tuple(
        methodArb,
        uriArb,
        pairsArb,
        fc.uint8Array({ maxLength: 200 }).map((a) => Buffer.from(a)),
      )
      .map(([method, uri, extra, body]) => uwsgiRequest(head(method, uri, body.length, extra), body))
    await capturingCrashes((check) =>
      fc.assert(
        fc.asyncProperty(inputArb(valid, 600), cutsArb, endingArb, async (bytes, cuts, ending) => {
          const reply = await blast(port, pieces(bytes, cuts), ending)
          check()
          // What the listener wrote back is an HTTP/1.1 response (or nothing).
          if (reply.length > 0) assert.match(reply.toString('latin1'), /^HTTP\/1\.1 [1-5]\d\d [^\r\n]*\r\n/)
          const fresh = await UwsgiHeld.open(port)
          await fresh.finish()
          if (++cases % HELD_EVERY === 0) {
            await held.finish()
            held = await UwsgiHeld.open(port)
          }
          check()
        }),
        params('uwsgi_listen: random and mutated packets; other clients still served'),
      ),
    )
    await held.finish()
  })
})
