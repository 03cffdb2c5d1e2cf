import assert from 'node:assert/strict'
import { readdirSync, readSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { Readable } from 'node:stream'
import { text } from 'node:stream/consumers'
import { test } from 'node:test'
import { spoolBody } from '../../src/core/body-spool.js'
import { GatehouseError } from '../../src/core/errors.js'

const PREFIX = `gatehouse-spool-test-${process.pid}-`
const tempFiles = () => readdirSync(tmpdir()).filter((f) => f.startsWith(PREFIX))

function source(parts: string[]): Readable {
  return Readable.from(
    parts.map((p) => Buffer.from(p)),
    { objectMode: false },
  )
}

test('a small body stays in memory and streams as often as asked', async () => {
  const spool = await spoolBody(source(['abc', 'def']), 100, { memoryBytes: 10, prefix: PREFIX })
  assert.equal(spool.length, 6)
  assert.equal(spool.file, undefined)
  assert.equal(await text(spool.stream()), 'abcdef')
  assert.equal(await text(spool.stream()), 'abcdef')
  await spool.dispose()
})

test('a larger body goes to an open, already unlinked file whose offset is 0', async () => {
  const parts = ['0123456789', 'abcdefghij', 'KLMNOPQRST']
  const spool = await spoolBody(source(parts), 100, { memoryBytes: 15, prefix: PREFIX })
  try {
    assert.equal(spool.length, 30)
    assert.ok(spool.file, 'a file')
    assert.deepEqual(tempFiles(), [], 'no name left in the temporary directory')
    assert.equal(await text(spool.stream()), parts.join(''))
    assert.equal(await text(spool.stream()), parts.join(''), 'streams read at positions')
    // What a child process given the descriptor as stdin reads: from the current offset.
    const buf = Buffer.alloc(64)
    const n = readSync(spool.file.fd, buf, 0, buf.length, null)
    assert.equal(buf.toString('latin1', 0, n), parts.join(''))
  } finally {
    await spool.dispose()
  }
  assert.equal(spool.file.fd, -1, 'closed')
  await spool.dispose()
})

test('past the limit: GH_ERR_BODY_TOO_LARGE, the source left open, no file kept', async () => {
  const input = source(['0123456789', '0123456789', '0123456789'])
  await assert.rejects(
    spoolBody(input, 25, { memoryBytes: 5, prefix: PREFIX }),
    (err: unknown) => err instanceof GatehouseError && err.code === 'GH_ERR_BODY_TOO_LARGE',
  )
  assert.equal(input.destroyed, false)
  assert.deepEqual(tempFiles(), [])
})

test('a source that fails fails the spool', async () => {
  const input = new Readable({
    read() {
      this.push(Buffer.alloc(20))
      this.destroy(new Error('client went away'))
    },
  })
  await assert.rejects(spoolBody(input, 100, { memoryBytes: 5, prefix: PREFIX }), /client went away/)
  assert.deepEqual(tempFiles(), [])
})
