/*
 * The proxy action with an upstream group of two Node servers: balancing, a stopped server
 * that loses no idempotent request, and active HTTP health checks.
 */
import assert from 'node:assert/strict'
import { once } from 'node:events'
import { createServer, type Server } from 'node:http'
import { before, describe, test } from 'node:test'
import { request } from 'undici'
import { liveGroups } from '../../../src/core/upstream/index.js'
import { type Running, startGatehouse, suiteCleanups } from '../../support/helpers.js'

describe('proxy action: an upstream group of two Node servers', () => {
  const health = { a: 200, b: 200 }
  const servers: Record<'a' | 'b', Server> = {
    a: createServer((req, res) => res.writeHead(req.url === '/health' ? health.a : 200).end('a')),
    b: createServer((req, res) => res.writeHead(req.url === '/health' ? health.b : 200).end('b')),
  }
  const addr: Record<string, string> = {}
  let gh: Running
  const hooks = suiteCleanups()

  before(async () => {
    for (const name of ['a', 'b'] as const) {
      const s = servers[name]
      s.listen(0, '127.0.0.1')
      await once(s, 'listening')
      addr[name] = `127.0.0.1:${(s.address() as { port: number }).port}`
      hooks.after(() => {
        s.closeAllConnections()
        return new Promise((r) => s.close(r))
      })
    }
    gh = await startGatehouse(hooks, {
      upstreams: {
        checked: { servers: [addr.a!, addr.b!], health: { path: '/health', interval: '1h' } },
      },
      routes: [
        { path: '/checked/', proxy: { upstream: 'checked' } },
        { path: '/', proxy: { upstream: [addr.a!, addr.b!] } },
      ],
    })
  })

  const names = async (path: string, n: number) => {
    const seen: string[] = []
    for (let i = 0; i < n; i++) {
      const res = await request(`${gh.origin}${path}`)
      assert.equal(res.statusCode, 200)
      seen.push(await res.body.text())
    }
    return seen
  }

  test('round robin over both servers', async () => {
    const seen = await names('/x', 10)
    assert.equal(seen.filter((n) => n === 'a').length, 5)
    assert.equal(seen.filter((n) => n === 'b').length, 5)
  })

  test('an active health check takes a failing server out of rotation and back', async () => {
    const group = liveGroups().find((g) => g.spec.name === 'checked')!
    health.b = 503
    await group.checkNow()
    assert.equal(group.stats().servers.find((s) => s.address === addr.b)?.state, 'down')
    assert.deepEqual(new Set(await names('/checked/', 6)), new Set(['a']))
    health.b = 200
    await group.checkNow()
    assert.equal(group.stats().servers.find((s) => s.address === addr.b)?.state, 'up')
    assert.deepEqual(new Set(await names('/checked/', 6)), new Set(['a', 'b']))
  })

  test('a stopped server: every GET is answered by the other', async () => {
    servers.b.closeAllConnections()
    await new Promise((r) => servers.b.close(r))
    const seen = await names('/y', 20)
    assert.deepEqual(new Set(seen), new Set(['a']))
  })
})
