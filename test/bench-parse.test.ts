import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { parseWrkOutput, totalSocketErrors, WrkParseError } from '../bench/wrk.js'

// Captured from wrk 4.1.0 (Debian) on this project's bench machine.

/** nginx `return 200 "hello"`: clean run, latencies in both us and ms. */
const CLEAN = `Running 2s test @ http://127.0.0.1:43675/hello
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   838.47us  548.20us   8.40ms   93.59%
    Req/Sec    59.46k     5.87k   69.24k    60.00%
  Latency Distribution
     50%  738.00us
     75%  845.00us
     90%    0.98ms
     99%    3.62ms
  118381 requests in 2.00s, 17.16MB read
Requests/sec:  59050.90
Transfer/sec:      8.56MB
`

/** Gatehouse, a path that 404s: every response counted as non-2xx. */
const NOT_FOUND = `Running 2s test @ http://127.0.0.1:18731/nope
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.61ms    1.49ms  42.94ms   93.25%
    Req/Sec    43.56k    12.64k   59.10k    75.00%
  Latency Distribution
     50%    1.20ms
     75%    1.70ms
     90%    2.56ms
     99%    5.70ms
  86483 requests in 2.00s, 15.26MB read
  Non-2xx or 3xx responses: 86483
Requests/sec:  43204.28
Transfer/sec:      7.62MB
`

/** Gatehouse killed 1.5 s into a 3 s run against a 404 path: non-2xx and socket errors. */
const ERRORS = `Running 3s test @ http://127.0.0.1:18731/nope
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     3.69ms   12.36ms 156.85ms   97.59%
    Req/Sec    29.31k    14.68k   52.80k    68.75%
  Latency Distribution
     50%    1.75ms
     75%    2.32ms
     90%    3.10ms
     99%   77.25ms
  46497 requests in 3.01s, 8.20MB read
  Socket errors: connect 0, read 66, write 71296, timeout 0
  Non-2xx or 3xx responses: 46497
Requests/sec:  15465.66
Transfer/sec:      2.73MB
`

describe('parseWrkOutput', () => {
  test('reads throughput, request count and latency percentiles, normalising units to ms', () => {
    const r = parseWrkOutput(CLEAN)
    assert.equal(r.requestsPerSecond, 59050.9)
    assert.equal(r.requests, 118381)
    assert.equal(r.durationSeconds, 2)
    assert.equal(r.latencyMs.avg, 0.83847)
    assert.equal(r.latencyMs.max, 8.4)
    assert.equal(r.latencyMs.p50, 0.738)
    assert.equal(r.latencyMs.p75, 0.845)
    assert.equal(r.latencyMs.p90, 0.98)
    assert.equal(r.latencyMs.p99, 3.62)
  })

  test('absent error lines mean zero errors', () => {
    const r = parseWrkOutput(CLEAN)
    assert.equal(r.non2xx3xx, 0)
    assert.deepEqual(r.socketErrors, { connect: 0, read: 0, write: 0, timeout: 0 })
  })

  test('counts non-2xx/3xx responses', () => {
    const r = parseWrkOutput(NOT_FOUND)
    assert.equal(r.non2xx3xx, 86483)
    assert.equal(r.non2xx3xx, r.requests)
    assert.equal(totalSocketErrors(r.socketErrors), 0)
  })

  test('reads socket errors by kind alongside non-2xx responses', () => {
    const r = parseWrkOutput(ERRORS)
    assert.deepEqual(r.socketErrors, { connect: 0, read: 66, write: 71296, timeout: 0 })
    assert.equal(totalSocketErrors(r.socketErrors), 71362)
    assert.equal(r.non2xx3xx, 46497)
    assert.equal(r.requestsPerSecond, 15465.66)
    assert.equal(r.durationSeconds, 3.01)
  })

  test('latencies in seconds are converted too', () => {
    const r = parseWrkOutput(CLEAN.replace('99%    3.62ms', '99%    1.25s'))
    assert.equal(r.latencyMs.p99, 1250)
  })

  test('output without a report (wrk could not connect) is an error that keeps the text', () => {
    const text = 'unable to connect to 127.0.0.1:18799 Connection refused\n'
    assert.throws(
      () => parseWrkOutput(text),
      (err: unknown) => err instanceof WrkParseError && err.output === text && /latency/.test(err.message),
    )
  })

  test('a run without --latency is refused rather than reported with missing percentiles', () => {
    const withoutDistribution = CLEAN.replace(/ {2}Latency Distribution[\s\S]*?(?= {2}\d+ requests)/, '')
    assert.throws(() => parseWrkOutput(withoutDistribution), /50% latency/)
  })
})
