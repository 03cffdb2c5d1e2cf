/*
 * Request body size (issue 17, "what users reach for"): the default lets a normal upload
 * through (a 5 MB body to a WSGI app, as gunicorn and uvicorn do), --max-body-size sets the
 * limit of every route from the command line, and the 413's log line names the setting
 * that refused the body. -b/--bind is --listen's other spelling.
 */
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { join } from 'node:path'
import { Readable } from 'node:stream'
import { test } from 'node:test'
import { request } from 'undici'
import {
  CLI,
  eventually,
  FIXTURES,
  freePort,
  logLines,
  PYTHON,
  stopServe,
  tempDir,
} from '../support/helpers.js'

async function serve(t: Parameters<typeof tempDir>[0], args: string[]) {
  const dir = tempDir(t, 'gh-body-size-')
  const port = await freePort()
  const errorLog = join(dir, 'error.log')
  const child = spawn(
    process.execPath,
    [CLI, 'serve', '-b', `127.0.0.1:${port}`, '--error-log', errorLog, ...args],
    { stdio: 'ignore' },
  )
  t.after(() => stopServe(child))
  const origin = `http://127.0.0.1:${port}`
  await eventually(
    () =>
      request(`${origin}/`).then(
        async (r) => (await r.body.dump(), true),
        () => false,
      ),
    'the server to listen',
    30_000,
  )
  return { origin, errorLog }
}

const WSGI = [
  '--wsgi',
  'apps:echo_read',
  '--chdir',
  join(FIXTURES, 'wsgi'),
  '--python',
  PYTHON,
  '--workers',
  '1',
]

test('the default body limit lets a 5 MB upload reach a WSGI app', { timeout: 60_000 }, async (t) => {
  const { origin } = await serve(t, WSGI)
  const body = Buffer.alloc(5 * 1024 * 1024, 0x61)
  const r = await request(`${origin}/`, { method: 'POST', body })
  assert.equal(r.statusCode, 200)
  const text = await r.body.text()
  assert.ok(text.endsWith(`|${body.length}`), 'the app read the whole body')
})

test(
  '--max-body-size refuses a larger body with 413, and the log names the setting',
  { timeout: 60_000 },
  async (t) => {
    const { origin, errorLog } = await serve(t, [...WSGI, '--max-body-size', '1k'])
    const small = await request(`${origin}/`, { method: 'POST', body: Buffer.alloc(1000, 0x61) })
    assert.equal(small.statusCode, 200)
    await small.body.dump()
    // By Content-Length at the front, and counted while a chunked body streams.
    const declared = await request(`${origin}/`, { method: 'POST', body: Buffer.alloc(2048, 0x61) })
    assert.equal(declared.statusCode, 413)
    await declared.body.dump()
    const chunked = await request(`${origin}/`, {
      method: 'POST',
      body: Readable.from([0, 1, 2, 3].map(() => Buffer.alloc(1024, 0x62))),
    })
    assert.equal(chunked.statusCode, 413)
    await chunked.body.dump()
    const refused = await eventually(() => {
      const lines = logLines(errorLog).filter((l) => l.msg === 'request body over the limit: 413')
      return lines.length >= 2 && lines
    }, 'the 413 log lines')
    for (const line of refused) {
      assert.equal(line.setting, 'limits.max_body_bytes (--max-body-size)')
      assert.equal(line.limit, 1024)
    }
  },
)
