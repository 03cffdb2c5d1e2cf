/*
 * The /config/... paths on a configuration as given (src/control/config-tree.ts): pure, so
 * checked on plain values; the input is never changed (a refused change leaves it as it was).
 */
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { appendAt, configPath, deleteAt, getAt, type Json, putAt } from '../../src/control/config-tree.js'
import type { GatehouseError } from '../../src/core/errors.js'

const config = (): Json => ({
  listen: ['127.0.0.1:8080'],
  routes: [
    { exact: '/a', return: { status: 200 } },
    { path: '/', static: { root: '/srv' } },
  ],
  'a/b': 1,
})

const code = (fn: () => unknown) => {
  try {
    fn()
  } catch (err) {
    return (err as GatehouseError).code
  }
  return 'no error'
}

test('configPath: /config and its sub-paths, percent-decoded; anything else is not a config path', () => {
  assert.deepEqual(configPath('/config'), [])
  assert.deepEqual(configPath('/config/'), [])
  assert.deepEqual(configPath('/config/routes/2/wsgi/workers'), ['routes', '2', 'wsgi', 'workers'])
  assert.deepEqual(configPath('/config/routes/'), ['routes'])
  assert.deepEqual(configPath('/config/a%2Fb'), ['a/b'])
  assert.equal(configPath('/configuration'), null)
  assert.equal(configPath('/status'), null)
  assert.equal(
    code(() => configPath('/config/%zz')),
    'GH_ERR_CONTROL_REQUEST',
  )
})

test('getAt: keys and indices; a missing key, an index past the end, or a step into a scalar is GH_ERR_CONTROL_PATH', () => {
  const c = config()
  assert.deepEqual(getAt(c, []), c)
  assert.deepEqual(getAt(c, ['routes', '1', 'static']), { root: '/srv' })
  assert.equal(getAt(c, ['a/b']), 1)
  for (const path of [
    ['routes', '2'],
    ['routes', '01'],
    ['routes', '-1'],
    ['nope'],
    ['listen', '0', 'x'],
    ['routes', 'length'],
  ])
    assert.equal(
      code(() => getAt(c, path)),
      'GH_ERR_CONTROL_PATH',
      path.join('/'),
    )
})

test('putAt replaces or creates (the parent must exist; an array index up to its length), without changing the input', () => {
  const c = config()
  const before = structuredClone(c)
  assert.deepEqual(getAt(putAt(c, ['routes', '0', 'return', 'status'], 204), ['routes', '0', 'return']), {
    status: 204,
  })
  assert.deepEqual(getAt(putAt(c, ['routes', '0', 'methods'], ['GET']), ['routes', '0', 'methods']), ['GET'])
  assert.equal((getAt(putAt(c, ['routes', '2'], { exact: '/c' }), ['routes']) as Json[]).length, 3)
  assert.deepEqual(putAt(c, [], { listen: [] }), { listen: [] })
  assert.equal(
    code(() => putAt(c, ['routes', '3'], {})),
    'GH_ERR_CONTROL_REQUEST',
  )
  assert.equal(
    code(() => putAt(c, ['routes', 'x'], {})),
    'GH_ERR_CONTROL_REQUEST',
  )
  assert.equal(
    code(() => putAt(c, ['limits', 'backlog'], 5)),
    'GH_ERR_CONTROL_PATH',
  )
  assert.deepEqual(c, before)
})

test('appendAt appends to an array and says where; deleteAt removes a key or an item; neither changes the input', () => {
  const c = config()
  const before = structuredClone(c)
  const { root, index } = appendAt(c, ['routes'], { exact: '/c' })
  assert.equal(index, 2)
  assert.deepEqual(getAt(root, ['routes', '2']), { exact: '/c' })
  assert.equal(
    code(() => appendAt(c, ['routes', '0'], {})),
    'GH_ERR_CONTROL_REQUEST',
  )
  assert.equal(
    code(() => appendAt(c, ['nope'], {})),
    'GH_ERR_CONTROL_PATH',
  )
  const removed = deleteAt(c, ['routes', '0'])
  assert.deepEqual(getAt(removed, ['routes']), [{ path: '/', static: { root: '/srv' } }])
  assert.equal(
    code(() => getAt(deleteAt(c, ['a/b']), ['a/b'])),
    'GH_ERR_CONTROL_PATH',
  )
  assert.deepEqual(deleteAt(c, []), {})
  assert.equal(
    code(() => deleteAt(c, ['routes', '5'])),
    'GH_ERR_CONTROL_PATH',
  )
  assert.deepEqual(c, before)
})
