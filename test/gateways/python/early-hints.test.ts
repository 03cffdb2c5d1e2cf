/*
 * 103 Early Hints from an ASGI app (issue 17), by the `http.response.early_hint` extension
 * (as Hypercorn offers it): the links reach an HTTP/1.1 client as a 103 before the final
 * response, as curl shows it; an HTTP/1.0 client gets the response alone (RFC 9110 15.2).
 */
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { join } from 'node:path'
import { test } from 'node:test'
import { promisify } from 'node:util'
import { eventually, FIXTURES, PYTHON, rawRequest, startGatehouse } from '../../support/helpers.js'

const run = promisify(execFile)

test('ASGI http.response.early_hint: a 103 with the links before the 200; none to HTTP/1.0', async (t) => {
  const { origin, port } = await startGatehouse(t, {
    routes: [
      { path: '/', asgi: { app: 'hints:app', chdir: join(FIXTURES, 'asgi'), python: PYTHON, workers: 1 } },
    ],
  })
  const stdout = await eventually(async () => {
    const r = await run('curl', ['-sS', '-i', '--max-time', '30', `${origin}/`])
    return r.stdout.includes('HTTP/1.1 200 OK') && r.stdout
  }, 'the ASGI pool')
  const final = stdout.indexOf('HTTP/1.1 200 OK\r\n')
  assert.equal(stdout.indexOf('HTTP/1.1 103 Early Hints\r\n'), 0, stdout)
  assert.match(
    stdout.slice(0, final),
    /\r\nlink: <\/style\.css>; rel=preload; as=style, <\/app\.js>; rel=preload; as=script\r\n\r\n$/i,
  )
  assert.doesNotMatch(stdout, /late\.css/)
  assert.ok(stdout.endsWith('\r\n\r\noffered'), stdout)

  const old = await rawRequest(port, 'GET / HTTP/1.0\r\nHost: x\r\n\r\n', { waitMs: 10_000 })
  assert.equal(old.status, 200)
  assert.doesNotMatch(old.text, /103/)
  assert.match(old.text, /offered$/)
})
