/*
 * CGI buffers both ways by default (issue 18 item 3): a script whose client does not read
 * runs to its end (its output goes to memory, then a temporary file), so with
 * max_processes = 1 the next request still gets a process; an upload at a trickle is read
 * whole before a script is started.
 */
import assert from 'node:assert/strict'
import { request as httpRequest, type IncomingMessage } from 'node:http'
import { connect } from 'node:net'
import { join } from 'node:path'
import { test } from 'node:test'
import { request } from 'undici'
import { FIXTURES, PYTHON, startGatehouse } from '../../support/helpers.js'

const DEADLINE_MS = 20_000

test('CGI with max_processes = 1: a non-reading client and a trickling upload hold no process', async (t) => {
  const gh = await startGatehouse(t, {
    routes: [
      {
        path: '/',
        cgi: {
          root: join(FIXTURES, 'cgi'),
          interpreters: { py: PYTHON },
          max_processes: 1,
          queue_timeout: 60,
          env: { BIG_BYTES: String(24 * 1024 * 1024) },
        },
      },
    ],
  })
  const innocent = async () => {
    const r = await request(`${gh.origin}/env.sh`, { headersTimeout: DEADLINE_MS, bodyTimeout: DEADLINE_MS })
    return { status: r.statusCode, body: await r.body.text() }
  }
  const reader = await new Promise<IncomingMessage>((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port: gh.port, path: '/big.sh', agent: false }, (res) => {
      res.pause()
      resolve(res)
    })
    req.on('error', reject)
    req.end()
  })
  t.after(() => reader.destroy())
  const trickle = connect(gh.port, '127.0.0.1')
  trickle.on('error', () => {})
  t.after(() => trickle.destroy())
  trickle.write('POST /count.py HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nx')
  // big.sh ran to its end while nobody read, and the upload is still coming: the one
  // process slot is free.
  assert.equal((await innocent()).status, 200)

  let bytes = 0
  reader.on('data', (c: Buffer) => (bytes += c.length))
  reader.resume()
  await new Promise((r) => reader.once('end', r))
  assert.equal(bytes, 24 * 1024 * 1024)
  const answer = new Promise<string>((resolve) => {
    let text = ''
    trickle.on('data', (c: Buffer) => {
      text += c.toString('latin1')
      if (text.includes('bytes=100')) resolve(text)
    })
  })
  trickle.write('y'.repeat(99))
  assert.match(await answer, /^HTTP\/1\.1 200 [\s\S]*cl=100/)
})
