/*
 * Request and response buffering for WSGI (issue 18, severe item 3): slow uploaders and
 * clients that never read their response hold memory and disk, not the worker, so an
 * innocent request is served meanwhile. One worker with one thread: anything that held it
 * would keep the innocent request waiting; each check has a generous deadline that only a
 * hang reaches. The same scenarios with buffering off show what the default protects from.
 */
import assert from 'node:assert/strict'
import { existsSync } from 'node:fs'
import { request as httpRequest, type IncomingMessage } from 'node:http'
import { connect, type Socket } from 'node:net'
import { join } from 'node:path'
import { test, type TestContext } from 'node:test'
import { request } from 'undici'
import { eventually, FIXTURES, PYTHON, startGatehouse, tempDir } from '../../support/helpers.js'

const DEADLINE_MS = 20_000

async function start(t: TestContext, buffering: boolean) {
  const dir = tempDir(t, 'gh-buffering-')
  const running = await startGatehouse(t, {
    routes: [
      {
        path: '/',
        wsgi: {
          app: 'buffering:application',
          chdir: join(FIXTURES, 'uwsgi'),
          python: PYTHON,
          workers: 1,
          pipeline: 0,
          queue_timeout: 60,
          env: { DONE_DIR: dir },
          request_buffering: buffering,
          response_buffering: buffering,
        },
      },
    ],
  })
  const innocent = async () => {
    const r = await request(`${running.origin}/`, { headersTimeout: DEADLINE_MS, bodyTimeout: DEADLINE_MS })
    return { status: r.statusCode, body: await r.body.text() }
  }
  await eventually(async () => (await innocent()).status === 200, 'the pool')
  return { ...running, dir, innocent }
}

/** A POST of `length` bytes of which only the first arrives: a client uploading at a trickle. */
function slowUpload(t: TestContext, port: number, length: number): Socket {
  const socket = connect(port, '127.0.0.1')
  socket.on('error', () => {})
  socket.write(`POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: ${length}\r\n\r\nx`)
  t.after(() => socket.destroy())
  return socket
}

/** A GET of a large body whose reader never reads past the head. */
function nonReader(t: TestContext, port: number, mib: number, id: string): Promise<IncomingMessage> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      { host: '127.0.0.1', port, path: `/big?${mib}`, headers: { 'x-id': id }, agent: false },
      (res) => {
        res.pause()
        t.after(() => res.destroy())
        resolve(res)
      },
    )
    req.on('error', reject)
    req.end()
  })
}

test('request buffering (default): clients uploading at a trickle hold no worker', async (t) => {
  const gh = await start(t, true)
  const uploads = [1, 2, 3].map(() => slowUpload(t, gh.port, 100))
  const r = await gh.innocent()
  assert.equal(r.status, 200)
  // The slow uploads are served once their bodies are in.
  const answers = uploads.map(
    (socket) =>
      new Promise<string>((resolve) => {
        let text = ''
        socket.on('data', (c: Buffer) => {
          text += c.toString('latin1')
          if (text.includes('got 100')) resolve(text)
        })
      }),
  )
  for (const socket of uploads) socket.write('y'.repeat(99))
  for (const text of await Promise.all(answers)) assert.match(text, /^HTTP\/1\.1 200 /)
})

test('request_buffering = false: a trickling upload holds the one worker (what the default prevents)', async (t) => {
  const gh = await start(t, false)
  const upload = slowUpload(t, gh.port, 100)
  // The upload has the worker: the innocent request waits for it.
  const innocent = gh.innocent()
  const first = await Promise.race([innocent.then(() => 'innocent'), sleepRef(1500).then(() => 'waiting')])
  assert.equal(first, 'waiting')
  upload.write('y'.repeat(99))
  assert.equal((await innocent).status, 200)
})

test('response buffering (default): clients that never read hold no worker; they get every byte later', async (t) => {
  const gh = await start(t, true)
  const mib = 24
  const readers = await Promise.all(['a', 'b'].map((id) => nonReader(t, gh.port, mib, id)))
  // Both apps ran to their end while nobody read.
  await eventually(
    () => existsSync(join(gh.dir, 'done-a')) && existsSync(join(gh.dir, 'done-b')),
    'both apps to finish',
    DEADLINE_MS,
  )
  assert.equal((await gh.innocent()).status, 200)
  for (const res of readers) {
    let bytes = 0
    let tail = ''
    res.on('data', (c: Buffer) => {
      bytes += c.length
      tail = (tail + c.subarray(-16).toString('latin1')).slice(-16)
    })
    res.resume()
    await new Promise((r) => res.once('end', r))
    assert.equal(bytes, mib * 1024 * 1024)
    assert.equal(tail, '0123456789abcdef')
  }
})

test('response_buffering = false: a client that does not read holds the worker (what the default prevents)', async (t) => {
  const gh = await start(t, false)
  const reader = await nonReader(t, gh.port, 24, 'a')
  const innocent = gh.innocent()
  const first = await Promise.race([innocent.then(() => 'innocent'), sleepRef(1500).then(() => 'waiting')])
  assert.equal(first, 'waiting')
  assert.equal(existsSync(join(gh.dir, 'done-a')), false)
  reader.resume()
  assert.equal((await innocent).status, 200)
})

function sleepRef(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms))
}
