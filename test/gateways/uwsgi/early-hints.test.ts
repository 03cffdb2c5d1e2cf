/*
 * 103 Early Hints from an app behind uWSGI (issue 17): relayed to an HTTP/1.1 client before
 * the final response, as curl shows it; never to an HTTP/1.0 client (RFC 9110 15.2).
 */
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { test } from 'node:test'
import { promisify } from 'node:util'
import { rawRequest, startGatehouse, tempDir } from '../../support/helpers.js'
import { startUwsgi } from '../../support/peer-uwsgi.js'

const run = promisify(execFile)

test('uWSGI app: its 103 Early Hints reaches curl before the 200; an HTTP/1.0 client gets the 200 alone', async (t) => {
  const dir = tempDir(t, 'gh-hints-')
  const uwsgi = await startUwsgi(t, dir, { module: 'hints:application', processes: 1 })
  const { origin, port } = await startGatehouse(t, {
    routes: [{ path: '/', uwsgi: { pass: uwsgi.address } }],
  })

  const { stdout } = await run('curl', ['-sS', '-i', '--max-time', '30', `${origin}/`])
  const hints = stdout.indexOf('HTTP/1.1 103 Early Hints\r\n')
  const final = stdout.indexOf('HTTP/1.1 200 OK\r\n')
  assert.ok(hints === 0 && final > hints, stdout)
  assert.match(stdout.slice(0, final), /\r\nlink: <\/style\.css>; rel=preload; as=style\r\n\r\n$/i)
  assert.ok(stdout.endsWith('\r\n\r\nfinal body\n'), stdout)

  const old = await rawRequest(port, 'GET / HTTP/1.0\r\nHost: x\r\n\r\n', { waitMs: 10_000 })
  assert.equal(old.status, 200)
  assert.doesNotMatch(old.text, /103/)
  assert.match(old.text, /final body\n$/)
})
