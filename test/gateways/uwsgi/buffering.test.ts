/*
 * The uwsgi action buffers both ways by default (issue 18 item 3), against real uWSGI with
 * one process: a client that never reads its response, or uploads at a trickle, holds
 * neither that process nor the connection to it, and an innocent request is served.
 */
import assert from 'node:assert/strict'
import { existsSync } from 'node:fs'
import { request as httpRequest, type IncomingMessage } from 'node:http'
import { connect } from 'node:net'
import { join } from 'node:path'
import { test } from 'node:test'
import { request } from 'undici'
import { eventually, startGatehouse, tempDir } from '../../support/helpers.js'
import { startUwsgi } from '../../support/peer-uwsgi.js'

const DEADLINE_MS = 20_000

test('uwsgi action with real uWSGI (1 process): non-reading and trickling clients hold no worker', async (t) => {
  const dir = tempDir(t, 'gh-uwsgi-buffering-')
  const uwsgi = await startUwsgi(t, dir, {
    module: 'buffering:application',
    processes: 1,
    env: { DONE_DIR: dir },
  })
  const gh = await startGatehouse(t, { routes: [{ path: '/', uwsgi: { pass: uwsgi.address } }] })
  const innocent = async () => {
    const r = await request(`${gh.origin}/`, { headersTimeout: DEADLINE_MS, bodyTimeout: DEADLINE_MS })
    return { status: r.statusCode, body: await r.body.text() }
  }
  assert.equal((await innocent()).status, 200)

  const mib = 24
  const reader = await new Promise<IncomingMessage>((resolve, reject) => {
    const req = httpRequest(
      { host: '127.0.0.1', port: gh.port, path: `/big?${mib}`, headers: { 'x-id': 'a' }, agent: false },
      (res) => {
        res.pause()
        resolve(res)
      },
    )
    req.on('error', reject)
    req.end()
  })
  t.after(() => reader.destroy())
  await eventually(
    () => existsSync(join(dir, 'done-a')),
    'the app to finish while its client does not read',
    DEADLINE_MS,
  )
  const trickle = connect(gh.port, '127.0.0.1')
  trickle.on('error', () => {})
  t.after(() => trickle.destroy())
  trickle.write('POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nx')
  assert.equal((await innocent()).status, 200)

  let bytes = 0
  reader.on('data', (c: Buffer) => (bytes += c.length))
  reader.resume()
  await new Promise((r) => reader.once('end', r))
  assert.equal(bytes, mib * 1024 * 1024)
  const answer = new Promise<string>((resolve) => {
    let text = ''
    trickle.on('data', (c: Buffer) => {
      text += c.toString('latin1')
      if (text.includes('got 100')) resolve(text)
    })
  })
  trickle.write('y'.repeat(99))
  assert.match(await answer, /^HTTP\/1\.1 200 /)
})
