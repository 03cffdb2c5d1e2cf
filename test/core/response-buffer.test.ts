/*
 * core/response-buffer.ts over real sockets: a producer writing into a ResponseBuffer in front
 * of a ServerResponse whose client does not read (yet).
 */
import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { readdirSync, readlinkSync } from 'node:fs'
import { createServer, request, type IncomingMessage, type ServerResponse } from 'node:http'
import { test, type TestContext } from 'node:test'
import { ResponseBuffer, type ResponseBufferOptions } from '../../src/core/response-buffer.js'
import { eventually } from '../support/helpers.js'

const PREFIX = 'gh-test-response-buffer-'

/** Open (deleted) temporary files of ours in this process. */
function tempFds(): number {
  let n = 0
  for (const fd of readdirSync('/proc/self/fd')) {
    try {
      if (readlinkSync(`/proc/self/fd/${fd}`).includes(PREFIX)) n++
    } catch {
      // closed meanwhile
    }
  }
  return n
}

interface Producer {
  /** Bytes the producer got to write (write() said true, or 'drain' came). */
  written: number
  finished: boolean
  buffer: ResponseBuffer
  digest: string
}

/**
 * A server whose one response is `total` bytes in 64 KiB pieces of a known pattern, written
 * into a ResponseBuffer as fast as it accepts them; the client pauses at once.
 */
async function setup(t: TestContext, total: number, options: ResponseBufferOptions) {
  const producer: Partial<Producer> = { written: 0, finished: false }
  const hash = createHash('sha256')
  const server = createServer((_req, res: ServerResponse) => {
    res.writeHead(200, { 'content-length': String(total) })
    const buffer = new ResponseBuffer(res, { ...options, prefix: PREFIX })
    producer.buffer = buffer
    let i = 0
    const pump = () => {
      while (producer.written! < total) {
        const n = Math.min(64 * 1024, total - producer.written!)
        const piece = Buffer.alloc(n, i++ % 251)
        hash.update(piece)
        producer.written! += n
        if (!buffer.write(piece)) {
          buffer.once('drain', pump)
          return
        }
      }
      producer.finished = true
      producer.digest = hash.digest('hex')
      buffer.end()
    }
    pump()
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  t.after(() => {
    server.closeAllConnections()
    server.close()
  })
  const { port } = server.address() as { port: number }
  const res = await new Promise<IncomingMessage>((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, agent: false }, (r) => {
      r.pause()
      resolve(r)
    })
    req.on('error', reject)
    req.end()
  })
  t.after(() => res.destroy())
  return { producer: producer as Producer, res }
}

async function readAll(res: IncomingMessage): Promise<{ bytes: number; digest: string }> {
  const hash = createHash('sha256')
  let bytes = 0
  res.on('data', (c: Buffer) => {
    bytes += c.length
    hash.update(c)
  })
  res.resume()
  await new Promise((r) => res.once('end', r))
  return { bytes, digest: hash.digest('hex') }
}

test('a producer finishes while the client does not read; the client then gets every byte in order', async (t) => {
  const total = 40 * 1024 * 1024
  const { producer, res } = await setup(t, total, { memoryBytes: 256 * 1024, maxFileBytes: 1024 ** 3 })
  await eventually(() => producer.finished, 'the producer to finish')
  assert.ok(producer.buffer.spilledBytes > 0, 'part of it went to the file')
  assert.equal(tempFds(), 1)
  const got = await readAll(res)
  assert.equal(got.bytes, total)
  assert.equal(got.digest, producer.digest)
  await eventually(() => tempFds() === 0, 'the file to be closed')
})

test('past maxFileBytes the producer waits for the client (backpressure), then finishes', async (t) => {
  const total = 64 * 1024 * 1024
  const maxFileBytes = 4 * 1024 * 1024
  const { producer, res } = await setup(t, total, { memoryBytes: 256 * 1024, maxFileBytes })
  await eventually(() => producer.buffer?.fileBytes >= maxFileBytes, 'the file to fill')
  await new Promise((r) => setTimeout(r, 300))
  assert.equal(producer.finished, false)
  assert.ok(producer.buffer.fileBytes < maxFileBytes + 64 * 1024, `${producer.buffer.fileBytes} in the file`)
  const got = await readAll(res)
  assert.equal(got.bytes, total)
  assert.equal(got.digest, producer.digest)
})

test('memory only (maxFileBytes 0): no file; backpressure past memoryBytes', async (t) => {
  const total = 64 * 1024 * 1024
  const { producer, res } = await setup(t, total, { memoryBytes: 1024 * 1024, maxFileBytes: 0 })
  await new Promise((r) => setTimeout(r, 500))
  assert.equal(producer.finished, false)
  assert.equal(producer.buffer.spilledBytes, 0)
  assert.equal(tempFds(), 0)
  const got = await readAll(res)
  assert.equal(got.bytes, total)
  assert.equal(got.digest, producer.digest)
})

test('a client that leaves: the file is closed, later writes are dropped', async (t) => {
  const total = 40 * 1024 * 1024
  const { producer, res } = await setup(t, total, { memoryBytes: 256 * 1024, maxFileBytes: 1024 ** 3 })
  await eventually(() => producer.finished, 'the producer to finish')
  assert.equal(tempFds(), 1)
  res.destroy()
  await eventually(() => tempFds() === 0, 'the file to be closed')
})
