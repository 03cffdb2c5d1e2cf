import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { Router, type RouteSpec } from '../../src/router/router.js'

function router(specs: Omit<RouteSpec<string>, 'target'>[]) {
  return new Router(specs.map((s, i) => ({ ...s, target: `r${i}` })))
}
function hit(r: Router<string>, path: string, method = 'GET', host = 'example.org') {
  const m = r.match(host, path, method)
  return m.kind === 'found' ? m.target : m.kind === 'method_not_allowed' ? `405:${m.allow.join(',')}` : '404'
}

describe('router', () => {
  test('longest prefix wins regardless of order', () => {
    const r = router([{ path: '/' }, { path: '/static/img' }, { path: '/static' }])
    assert.equal(hit(r, '/'), 'r0')
    assert.equal(hit(r, '/static'), 'r2')
    assert.equal(hit(r, '/static/x.css'), 'r2')
    assert.equal(hit(r, '/static/img/a.png'), 'r1')
  })

  test('prefixes match on segment boundaries, with or without trailing slash', () => {
    const r = router([{ path: '/static/' }, { path: '/api' }])
    assert.equal(hit(r, '/staticfoo'), '404')
    assert.equal(hit(r, '/static'), 'r0')
    assert.equal(hit(r, '/static/'), 'r0')
    assert.equal(hit(r, '/apis'), '404')
    assert.equal(hit(r, '/api/v1'), 'r1')
  })

  test('exact beats regex beats prefix; regexes are first-match in config order', () => {
    const r = router([{ path: '/u' }, { regex: '^/u/(\\d+)$' }, { regex: '^/u/' }, { exact: '/u/42' }])
    assert.equal(hit(r, '/u/42'), 'r3')
    assert.equal(hit(r, '/u/7'), 'r1')
    assert.equal(hit(r, '/u/x'), 'r2')
    assert.equal(hit(r, '/u'), 'r0')
  })

  test('regex captures are passed on', () => {
    const r = router([{ regex: '^/u/(\\d+)/(\\w+)$' }])
    const m = r.match('h', '/u/12/name', 'GET')
    assert.equal(m.kind, 'found')
    assert.deepEqual(m.kind === 'found' && m.params, ['12', 'name'])
  })

  test('methods: first route allowing the method; 405 lists what is allowed; GET implies HEAD', () => {
    const r = router([
      { path: '/a', methods: ['POST'] },
      { path: '/a', methods: ['GET'] },
      { path: '/b', methods: ['PUT', 'DELETE'] },
    ])
    assert.equal(hit(r, '/a', 'POST'), 'r0')
    assert.equal(hit(r, '/a', 'GET'), 'r1')
    assert.equal(hit(r, '/a', 'HEAD'), 'r1')
    assert.equal(hit(r, '/b/x', 'GET'), '405:DELETE,PUT')
  })

  test('a shorter prefix that allows the method is used when the longer one does not', () => {
    const r = router([
      { path: '/', methods: ['GET'] },
      { path: '/api', methods: ['POST'] },
    ])
    assert.equal(hit(r, '/api/x', 'GET'), 'r0')
    assert.equal(hit(r, '/api/x', 'POST'), 'r1')
  })

  test('host: exact, then longest wildcard, then host-less routes; the chosen group is final', () => {
    const r = router([
      { path: '/' },
      { path: '/', hosts: ['*.example.com'] },
      { path: '/', hosts: ['*.api.example.com'] },
      { path: '/only', hosts: ['www.example.com'] },
    ])
    assert.equal(hit(r, '/', 'GET', 'other.org'), 'r0')
    assert.equal(hit(r, '/', 'GET', 'a.example.com'), 'r1')
    assert.equal(hit(r, '/', 'GET', 'v1.api.example.com'), 'r2')
    assert.equal(hit(r, '/only', 'GET', 'www.example.com'), 'r3')
    // www.example.com has its own group: routes of other groups are not consulted.
    assert.equal(hit(r, '/', 'GET', 'www.example.com'), '404')
    // a wildcard does not match the bare domain
    assert.equal(hit(r, '/', 'GET', 'example.com'), 'r0')
  })

  test('host patterns are case-insensitive', () => {
    const r = router([{ path: '/', hosts: ['Example.COM'] }])
    assert.equal(hit(r, '/', 'GET', 'example.com'), 'r0')
  })
})
