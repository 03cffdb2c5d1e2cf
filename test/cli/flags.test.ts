/*
 * The flags gunicorn and uvicorn users type (issue 17, "the flags people type"): each lands
 * on its config key, checked through the one schema the config file goes through.
 */
import assert from 'node:assert/strict'
import { join } from 'node:path'
import { test } from 'node:test'
import { applyFlags } from '../../src/cli/flags.js'
import { validateConfig } from '../../src/config.js'
import { GatehouseError } from '../../src/core/errors.js'
import { FIXTURES } from '../support/helpers.js'

const cwd = join(FIXTURES, 'wsgi')

test('-b, --keep-alive, --graceful-timeout, --timeout, --max-requests(-jitter), --max-body-size land on their keys', () => {
  const input = applyFlags(
    {},
    {
      bind: ['127.0.0.1:9001'],
      listen: ['127.0.0.1:9000'],
      keepAlive: '3',
      gracefulTimeout: '2s',
      maxBodySize: '10MB',
      wsgi: 'apps:pid',
      timeout: '7',
      maxRequests: '100',
      maxRequestsJitter: '10',
    },
    cwd,
  )
  const c = validateConfig(input, cwd)
  assert.deepEqual(c.listen, ['127.0.0.1:9000', '127.0.0.1:9001'])
  assert.equal(c.limits.keepalive_timeout, 3000)
  assert.equal(c.shutdown_grace, 2000)
  assert.equal(c.limits.max_body_bytes, 10 * 1024 * 1024)
  const wsgi = c.routes.at(-1)!.wsgi!
  assert.equal(wsgi.timeout, 7000)
  assert.equal(wsgi.max_requests, 100)
  assert.equal(wsgi.max_requests_jitter, 10)
})

test('--max-requests with --php and --wsgi applies to both; --timeout without --wsgi/--asgi is a usage error', () => {
  const c = validateConfig(applyFlags({}, { php: [cwd], wsgi: 'apps:pid', maxRequests: '5' }, cwd), cwd)
  assert.equal(c.routes.find((r) => r.php)!.php!.workers.max_requests, 5)
  assert.equal(c.routes.find((r) => r.wsgi)!.wsgi!.max_requests, 5)
  assert.throws(
    () => applyFlags({}, { timeout: '5' }, cwd),
    (err: unknown) =>
      err instanceof GatehouseError && err.code === 'GH_ERR_USAGE' && /--timeout/.test(err.message),
  )
})

test('--encode and --compress turn on the top-level encode; a table from the file is kept', () => {
  assert.equal(validateConfig(applyFlags({}, { encode: true }, cwd), cwd).encode, true)
  assert.equal(validateConfig(applyFlags({ encode: false }, { compress: true }, cwd), cwd).encode, true)
  const table = { gzip: true, br: false }
  assert.deepEqual(validateConfig(applyFlags({ encode: table }, { encode: true }, cwd), cwd).encode, table)
  assert.equal(validateConfig(applyFlags({}, {}, cwd), cwd).encode, undefined)
})

test('--proxy [PREFIX=]URL (repeatable) adds proxy routes; a bad URL is a config error at its route', () => {
  const c = validateConfig(
    applyFlags(
      {},
      { proxy: ['http://127.0.0.1:9000', '/api=http://127.0.0.1:9001/v1/', '/s=unix:./app.sock'] },
      cwd,
    ),
    cwd,
  )
  const routes = c.routes.map((r) => [
    r.path,
    (r as { proxy?: { upstream: { label: string } } }).proxy?.upstream.label,
  ])
  assert.deepEqual(routes, [
    ['/', 'http://127.0.0.1:9000'],
    ['/api', 'http://127.0.0.1:9001/v1/'],
    ['/s', `unix:${cwd}/app.sock`],
  ])
  assert.throws(
    () => validateConfig(applyFlags({}, { proxy: ['ftp://x'] }, cwd), cwd),
    /routes\[0\]\.proxy\.upstream: not an http/,
  )
})

test('--no-http2 turns [http2] enabled off; --h2c puts h2c = true on every plain listen; http2 on a plain entry is refused', () => {
  const off = validateConfig(applyFlags({}, { listen: ['127.0.0.1:9000'], http2: false }, cwd), cwd)
  assert.equal(off.http2.enabled, false)
  assert.equal(validateConfig({}, cwd).http2.enabled, true)
  const h2c = validateConfig(applyFlags({}, { listen: ['127.0.0.1:9000'], h2c: true }, cwd), cwd)
  assert.deepEqual(h2c.listen, [{ address: '127.0.0.1:9000', h2c: true }])
  assert.throws(
    () => validateConfig({ listen: [{ address: '127.0.0.1:9000', http2: true }] }, cwd),
    (err: GatehouseError) => /http2 is for a TLS listener/.test(JSON.stringify(err.problems)),
  )
})
