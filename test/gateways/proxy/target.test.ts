/* Upstream URLs and the path sent upstream (src/gateways/proxy/target.ts), as docs/proxy.md tabulates them. */
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { parseUpstreamUrl, upstreamPath } from '../../../src/gateways/proxy/target.js'

test('upstream URLs: origin, path part, unix sockets; what is refused', () => {
  assert.deepEqual(parseUpstreamUrl('http://b:8000', '/x'), {
    origin: 'http://b:8000',
    basePath: '',
    authority: 'b:8000',
    label: 'http://b:8000',
  })
  assert.equal(parseUpstreamUrl('http://b:8000/', '/x').basePath, '/')
  assert.equal(parseUpstreamUrl('https://b/base/', '/x').origin, 'https://b')
  assert.equal(parseUpstreamUrl('unix:app.sock', '/srv').socketPath, '/srv/app.sock')
  for (const bad of ['ftp://b', 'http://b/?q', 'http://u:p@b', 'unix:', 'b:8000'])
    assert.throws(() => parseUpstreamUrl(bad, '/x'), Error, bad)
})

test('paths as nginx proxy_pass and Caddy handle_path map them', () => {
  const at = (rawPath: string, query = 'q=1') => ({
    rawPath,
    path: decodeURI(rawPath),
    query,
    prefix: '/app',
  })
  assert.equal(upstreamPath(at('/app/x'), '', false), '/app/x?q=1')
  assert.equal(upstreamPath(at('/app/x'), '', true), '/x?q=1')
  assert.equal(upstreamPath(at('/app/x'), '/', true), '/x?q=1')
  assert.equal(upstreamPath(at('/app/x'), '/base/', true), '/base/x?q=1')
  assert.equal(upstreamPath(at('/app/x'), '/base', true), '/base/x?q=1')
  assert.equal(upstreamPath(at('/app/x'), '/base/', false), '/base/app/x?q=1')
  assert.equal(upstreamPath(at('/app', ''), '', true), '/')
  assert.equal(upstreamPath(at('/app', ''), '/base/', true), '/base/')
  // The prefix spelled with an escape is stripped too; a longer segment is not a prefix.
  assert.equal(upstreamPath(at('/%61pp/x%20y', ''), '', true), '/x%20y')
  assert.equal(upstreamPath(at('/apple', ''), '', true), '/apple')
})
