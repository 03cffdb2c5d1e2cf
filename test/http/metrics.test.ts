/*
 * Prometheus metrics (issue 16 item 2): the `metrics` route action shows requests by route,
 * method and status class with a latency histogram, bytes in and out, open connections and
 * WebSockets, and per pool php-fpm's exporter figures plus worker restarts by cause. Checked
 * with the real scraper's linter, `promtool check metrics` (Debian prometheus).
 */
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { test } from 'node:test'
import { request } from 'undici'
import { FIXTURES, PYTHON, startGatehouse } from '../support/helpers.js'

const PROMTOOL = '/usr/bin/promtool'

/** The value of one sample line `name{labels} value`, or undefined. */
function sample(text: string, series: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `))
  return line === undefined ? undefined : Number(line.slice(series.length + 1))
}

test('metrics: requests by route, method and status class, the latency histogram, bytes, a WSGI pool; promtool accepts them', async (t) => {
  const { origin } = await startGatehouse(t, {
    routes: [
      { exact: '/metrics', metrics: {} },
      { exact: '/hello', return: { status: 200, body: 'hello' } },
      {
        path: '/app',
        wsgi: {
          app: 'apps:environ_app',
          chdir: join(FIXTURES, 'wsgi'),
          python: PYTHON,
          workers: 1,
          max_requests: 2,
        },
      },
    ],
  })
  const get = async (path: string, method: 'GET' | 'POST' = 'GET') => {
    const r = await request(`${origin}${path}`, { method })
    await r.body.dump()
    return r.statusCode
  }
  for (let i = 0; i < 3; i++) assert.equal(await get('/hello'), 200)
  assert.equal(await get('/hello', 'POST'), 200)
  assert.equal(await get('/nowhere'), 404)
  for (let i = 0; i < 5; i++) assert.equal(await get('/app/x'), 200)

  const r = await request(`${origin}/metrics`)
  assert.equal(r.statusCode, 200)
  assert.match(String(r.headers['content-type']), /^text\/plain; version=0\.0\.4/)
  const text = await r.body.text()
  assert.equal(sample(text, 'gatehouse_http_requests_total{route="/hello",method="GET",status="2xx"}'), 3)
  assert.equal(sample(text, 'gatehouse_http_requests_total{route="/hello",method="POST",status="2xx"}'), 1)
  assert.equal(sample(text, 'gatehouse_http_requests_total{route="none",method="GET",status="4xx"}'), 1)
  assert.equal(sample(text, 'gatehouse_http_requests_total{route="/app",method="GET",status="2xx"}'), 5)
  assert.equal(sample(text, 'gatehouse_http_request_duration_seconds_count{route="/hello"}'), 4)
  assert.equal(sample(text, 'gatehouse_http_request_duration_seconds_bucket{le="+Inf",route="/app"}'), 5)
  assert.ok(sample(text, 'gatehouse_http_received_bytes_total')! > 0)
  assert.ok(sample(text, 'gatehouse_http_sent_bytes_total')! > 0)
  assert.ok(sample(text, 'gatehouse_http_open_connections')! >= 1, 'this scrape is on an open connection')
  assert.equal(sample(text, 'gatehouse_websockets_open'), 0)
  assert.equal(sample(text, 'gatehouse_pool_accepted_requests_total{pool="wsgi"}'), 5)
  // A request and at least its response's start cross the bridge for each of the 5.
  assert.ok(sample(text, 'gatehouse_bridge_frames_total{pool="wsgi",direction="sent"}')! >= 5)
  assert.ok(sample(text, 'gatehouse_bridge_frames_total{pool="wsgi",direction="received"}')! >= 5)
  assert.equal(
    sample(text, 'gatehouse_pool_queued_requests_total{pool="wsgi"}'),
    0,
    'one at a time: none waited',
  )
  assert.equal(sample(text, 'gatehouse_pool_queue_wait_seconds_total{pool="wsgi"}'), 0)
  // max_requests = 2: the worker is due for replacement after its second request.
  assert.ok(sample(text, 'gatehouse_pool_worker_restarts_total{pool="wsgi",cause="max_requests"}')! >= 1)
  assert.equal(sample(text, 'gatehouse_pool_worker_restarts_total{pool="wsgi",cause="crash"}'), 0)
  assert.equal(sample(text, 'gatehouse_pool_failed{pool="wsgi"}'), 0)
  assert.equal(sample(text, 'gatehouse_pool_listen_queue{pool="wsgi"}'), 0)

  if (existsSync(PROMTOOL)) {
    // promtool exits non-zero on an error; lint warnings are printed and fail too.
    const out = execFileSync(PROMTOOL, ['check', 'metrics'], { input: text, encoding: 'utf8' })
    assert.equal(out.trim(), '', `promtool: ${out}`)
  } else t.diagnostic(`${PROMTOOL} not found (Debian package prometheus): promtool check skipped`)
})
