/*
 * The gateway catalog (src/gateways/index.ts) names each gateway's actions and top-level
 * config keys without loading it: those names must be the loaded definitions' own.
 */
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { GATEWAYS } from '../../src/gateways/all.js'
import { CATALOG, gatewaysNamedBy } from '../../src/gateways/index.js'

test('the catalog lists every gateway with its actions and listener keys, in GATEWAYS order', async () => {
  assert.deepEqual(
    CATALOG.map((g) => g.name),
    GATEWAYS.map((g) => g.name),
  )
  for (const [i, entry] of CATALOG.entries()) {
    const gateway = GATEWAYS[i]!
    assert.equal(await entry.load(), gateway, `${entry.name}: load() gives its definition`)
    assert.deepEqual(entry.actions, Object.keys(gateway.actions ?? {}), `${entry.name}: actions`)
    const listener = 'listener' in gateway ? gateway.listener : undefined
    assert.deepEqual(entry.keys, Object.keys(listener?.shape() ?? {}), `${entry.name}: listener keys`)
  }
})

test('gatewaysNamedBy: the gateways of the route actions and listener keys a raw config names', () => {
  assert.deepEqual(gatewaysNamedBy({ routes: [{ path: '/', static: { root: '.' } }] }), ['static'])
  assert.deepEqual(
    gatewaysNamedBy({
      fastcgi_listen: ['127.0.0.1:9000'],
      routes: [
        { path: '/a', wsgi: {} },
        { exact: '/m', metrics: {} },
        { path: '/', static: {} },
      ],
    }),
    ['static', 'fastcgi', 'status', 'python'],
  )
  assert.deepEqual(gatewaysNamedBy({ routes: 'nonsense' }), [])
  assert.deepEqual(gatewaysNamedBy(null), [])
})
