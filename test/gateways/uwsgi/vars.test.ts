import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import fc from 'fast-check'
import { GatehouseError } from '../../../src/core/errors.js'
import {
  buildUwsgiVars,
  requestFromUwsgiVars,
  type UwsgiVarsInput,
} from '../../../src/gateways/uwsgi/vars.js'

const base: UwsgiVarsInput = {
  method: 'POST',
  rawPath: '/caf%C3%A9/x',
  query: 'a=1&b=%20',
  path: '/café/x',
  httpVersion: '1.1',
  rawHeaders: ['Host', 'example.com:8080', 'Content-Type', 'text/plain', 'Content-Length', '3'],
  contentLength: 3,
  scheme: 'http',
  remoteAddress: '192.0.2.7',
  remotePort: 40000,
  serverPort: 8080,
  serverName: 'example.com',
  documentRoot: '/srv/www',
}

const asText = (vars: ReturnType<typeof buildUwsgiVars>) =>
  vars.map(([k, v]) => [k, typeof v === 'string' ? v : v.toString('latin1')] as [string, string])

describe('buildUwsgiVars (client side)', () => {
  test('sends what nginx uwsgi_params sends, in its order, then HTTP_*', () => {
    const vars = asText(buildUwsgiVars(base))
    assert.deepEqual(vars, [
      ['QUERY_STRING', 'a=1&b=%20'],
      ['REQUEST_METHOD', 'POST'],
      ['CONTENT_TYPE', 'text/plain'],
      ['CONTENT_LENGTH', '3'],
      ['REQUEST_URI', '/caf%C3%A9/x?a=1&b=%20'],
      // Decoded path as UTF-8 bytes (nginx's $document_uri); shown here as latin1.
      ['PATH_INFO', Buffer.from('/café/x').toString('latin1')],
      ['DOCUMENT_ROOT', '/srv/www'],
      ['SERVER_PROTOCOL', 'HTTP/1.1'],
      ['REQUEST_SCHEME', 'http'],
      ['REMOTE_ADDR', '192.0.2.7'],
      ['REMOTE_PORT', '40000'],
      ['SERVER_PORT', '8080'],
      ['SERVER_NAME', 'example.com'],
      ['HTTP_HOST', 'example.com:8080'],
    ])
  })

  test('no body: CONTENT_TYPE and CONTENT_LENGTH are empty (as nginx sends them); HTTPS=on only over https', () => {
    const vars = new Map(
      asText(
        buildUwsgiVars({ ...base, method: 'GET', rawHeaders: [], contentLength: undefined, scheme: 'https' }),
      ),
    )
    assert.equal(vars.get('CONTENT_TYPE'), '')
    assert.equal(vars.get('CONTENT_LENGTH'), '')
    assert.equal(vars.get('HTTPS'), 'on')
    assert.equal(vars.get('REQUEST_SCHEME'), 'https')
    assert.equal(new Map(asText(buildUwsgiVars(base))).has('HTTPS'), false)
  })

  test('headers that must not become vars are dropped', () => {
    const vars = new Map(
      asText(
        buildUwsgiVars({
          ...base,
          rawHeaders: [
            ['Proxy', 'http://evil:3128'], // httpoxy
            ['X_Forwarded_For', '6.6.6.6'], // underscore: would collide with X-Forwarded-For
            ['X-Forwarded-For', '10.0.0.1'],
            ['Content-Length', '3'],
            ['Content-Type', 'text/plain'],
            ['Transfer-Encoding', 'chunked'],
            ['X.Dot', 'x'],
            ['Uwsgi-File', '/tmp/evil.py'],
          ].flat(),
        }),
      ),
    )
    assert.equal(vars.has('HTTP_PROXY'), false)
    assert.equal(vars.get('HTTP_X_FORWARDED_FOR'), '10.0.0.1')
    assert.equal(vars.has('HTTP_CONTENT_LENGTH'), false)
    assert.equal(vars.has('HTTP_CONTENT_TYPE'), false)
    assert.equal(vars.has('HTTP_TRANSFER_ENCODING'), false)
    assert.equal(vars.has('HTTP_X.DOT'), false)
    assert.equal(vars.get('HTTP_UWSGI_FILE'), '/tmp/evil.py')
    assert.equal(vars.has('UWSGI_FILE'), false)
  })

  test('Proxy-Authorization is withheld, as from CGI and FastCGI apps; Authorization is passed', () => {
    const vars = new Map(
      asText(
        buildUwsgiVars({
          ...base,
          rawHeaders: [
            'Proxy-Authorization',
            'Basic cHJveHk6c2VjcmV0',
            'PROXY-AUTHORIZATION',
            'x',
            'Authorization',
            'Basic dTpw',
          ],
        }),
      ),
    )
    assert.equal(vars.has('HTTP_PROXY_AUTHORIZATION'), false)
    assert.equal(vars.get('HTTP_AUTHORIZATION'), 'Basic dTpw')
  })

  test('repeated headers become one var: joined with ", " (Cookie with "; ")', () => {
    const vars = new Map(
      asText(
        buildUwsgiVars({ ...base, rawHeaders: ['Cookie', 'a=1', 'X-A', '1', 'cookie', 'b=2', 'x-a', '2'] }),
      ),
    )
    assert.equal(vars.get('HTTP_COOKIE'), 'a=1; b=2')
    assert.equal(vars.get('HTTP_X_A'), '1, 2')
  })

  test('host replaces the Host header (absolute-form targets); params come last and replace', () => {
    const vars = asText(
      buildUwsgiVars({
        ...base,
        host: 'real.example',
        params: [
          ['SERVER_NAME', 'configured'],
          ['UWSGI_SCRIPT', 'app:application'],
        ],
      }),
    )
    const map = new Map(vars)
    assert.equal(map.get('HTTP_HOST'), 'real.example')
    assert.equal(vars.filter(([k]) => k === 'HTTP_HOST').length, 1)
    assert.equal(map.get('SERVER_NAME'), 'configured')
    assert.deepEqual(
      vars.slice(-2).map(([k]) => k),
      ['SERVER_NAME', 'UWSGI_SCRIPT'],
    )
  })

  test('property: request headers only ever produce HTTP_* names (never UWSGI_*)', () => {
    const builtIn = new Set(
      asText(buildUwsgiVars({ ...base, rawHeaders: [], scheme: 'https' })).map(([k]) => k),
    )
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.string({ maxLength: 20 }), fc.string({ maxLength: 20 })), { maxLength: 20 }),
        (pairs) => {
          const vars = buildUwsgiVars({ ...base, rawHeaders: pairs.flat() })
          for (const [name] of vars) {
            if (builtIn.has(name)) continue
            assert.match(name, /^HTTP_[A-Z0-9_]+$/)
          }
        },
      ),
      { numRuns: 300 },
    )
  })
})

describe('requestFromUwsgiVars (listener side)', () => {
  const nginx: [string, string][] = [
    ['QUERY_STRING', 'q=1'],
    ['REQUEST_METHOD', 'POST'],
    ['CONTENT_TYPE', 'application/json'],
    ['CONTENT_LENGTH', '2'],
    ['REQUEST_URI', '/api/x?q=1'],
    ['PATH_INFO', '/api/x'],
    ['DOCUMENT_ROOT', '/usr/share/nginx/html'],
    ['SERVER_PROTOCOL', 'HTTP/1.1'],
    ['REQUEST_SCHEME', 'https'],
    ['HTTPS', 'on'],
    ['REMOTE_ADDR', '::ffff:203.0.113.9'],
    ['REMOTE_PORT', '51234'],
    ['SERVER_PORT', '443'],
    ['SERVER_NAME', 'example.com'],
    ['HTTP_HOST', 'example.com'],
    ['HTTP_X_REQUEST_ID', 'abc'],
    ['HTTP_COOKIE', 'a=1'],
    ['HTTP_COOKIE', 'b=2'],
    ['HTTP_CONTENT_LENGTH', '999'],
    ['HTTP_TRANSFER_ENCODING', 'chunked'],
  ]

  test('the request nginx described', () => {
    const head = requestFromUwsgiVars(nginx)
    assert.equal(head.method, 'POST')
    assert.equal(head.url, '/api/x?q=1')
    assert.equal(head.httpVersion, '1.1')
    assert.deepEqual(
      head.rawHeaders,
      [
        ['host', 'example.com'],
        ['x-request-id', 'abc'],
        ['cookie', 'a=1'],
        ['cookie', 'b=2'],
        ['content-type', 'application/json'],
        ['content-length', '2'],
      ].flat(),
    )
    assert.equal(head.remoteAddress, '203.0.113.9')
    assert.equal(head.remotePort, 51234)
    assert.equal(head.serverPort, 443)
    assert.equal(head.secure, true)
  })

  test('without REQUEST_URI the target is PATH_INFO, percent-encoded, and QUERY_STRING', () => {
    const head = requestFromUwsgiVars([
      ['REQUEST_METHOD', 'GET'],
      ['PATH_INFO', Buffer.from('/a b/é').toString('latin1')],
      ['QUERY_STRING', 'x=1'],
    ])
    assert.equal(head.url, '/a%20b/%C3%A9?x=1')
    assert.equal(head.secure, false)
    assert.equal(requestFromUwsgiVars([['REQUEST_METHOD', 'GET']]).url, '/')
  })

  test('a repeated var: the last one wins, as in uWSGI (a later uwsgi_param overrides uwsgi_params)', () => {
    const head = requestFromUwsgiVars([
      ['REQUEST_METHOD', 'GET'],
      ['HTTPS', ''],
      ['REQUEST_URI', '/first'],
      ['HTTPS', 'on'],
      ['REQUEST_URI', '/second'],
    ])
    assert.equal(head.url, '/second')
    assert.equal(head.secure, true)
  })

  test('a Unix-socket client (nginx REMOTE_ADDR "unix:") has the address ""', () => {
    const head = requestFromUwsgiVars([
      ['REQUEST_METHOD', 'GET'],
      ['REMOTE_ADDR', 'unix:'],
      ['REMOTE_PORT', ''],
    ])
    assert.equal(head.remoteAddress, '')
    assert.equal(head.remotePort, undefined)
  })

  test('vars that cannot describe a request are refused', () => {
    const refused = (vars: [string, string][]) =>
      assert.throws(
        () => requestFromUwsgiVars(vars),
        (err: unknown) => err instanceof GatehouseError && err.code === 'GH_ERR_UWSGI_PACKET',
        JSON.stringify(vars),
      )
    refused([['REQUEST_URI', '/']])
    refused([['REQUEST_METHOD', 'GET /']])
    refused([
      ['REQUEST_METHOD', 'GET'],
      ['HTTP_X', 'a\r\nInjected: 1'],
    ])
    refused([
      ['REQUEST_METHOD', 'GET'],
      ['REQUEST_URI', '/a b'],
    ])
    // The client's address reaches the app and the access log: an address or nothing.
    refused([
      ['REQUEST_METHOD', 'GET'],
      ['REMOTE_ADDR', '192.0.2.7\r\n192.0.2.8 - - [forged] "GET /admin"'],
    ])
    refused([
      ['REQUEST_METHOD', 'GET'],
      ['REMOTE_ADDR', 'evil.example'],
    ])
  })
})
