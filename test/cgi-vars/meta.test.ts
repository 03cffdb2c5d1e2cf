import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { buildCgiMeta, type CgiMetaInput, headerMetaName } from '../../src/cgi-vars/meta.js'

function input(over: Partial<CgiMetaInput> = {}): CgiMetaInput {
  return {
    method: 'GET',
    rawPath: '/cgi-bin/env.sh/a%20b',
    query: 'x=1&y=%41',
    scriptName: '/cgi-bin/env.sh',
    pathInfo: '/a b',
    scriptFilename: '/srv/cgi/env.sh',
    documentRoot: '/srv/cgi',
    httpVersion: '1.1',
    rawHeaders: ['Host', 'example.org:8080', 'User-Agent', 'test'],
    contentLength: undefined,
    serverName: 'example.org',
    serverPort: 8080,
    serverSoftware: 'Gatehouse/1',
    remoteAddress: '192.0.2.1',
    remotePort: 40000,
    localAddress: '198.51.100.2',
    scheme: 'http',
    passAuthorization: false,
    ...over,
  }
}

describe('CGI meta-variables', () => {
  test('the full set for a GET with PATH_INFO and a query', () => {
    assert.deepEqual(buildCgiMeta(input()), {
      GATEWAY_INTERFACE: 'CGI/1.1',
      SERVER_SOFTWARE: 'Gatehouse/1',
      SERVER_NAME: 'example.org',
      SERVER_PORT: '8080',
      SERVER_PROTOCOL: 'HTTP/1.1',
      SERVER_ADDR: '198.51.100.2',
      REQUEST_METHOD: 'GET',
      REQUEST_SCHEME: 'http',
      REQUEST_URI: '/cgi-bin/env.sh/a%20b?x=1&y=%41',
      QUERY_STRING: 'x=1&y=%41',
      SCRIPT_NAME: '/cgi-bin/env.sh',
      SCRIPT_FILENAME: '/srv/cgi/env.sh',
      DOCUMENT_ROOT: '/srv/cgi',
      PATH_INFO: '/a b',
      PATH_TRANSLATED: '/srv/cgi/a b',
      REMOTE_ADDR: '192.0.2.1',
      REMOTE_HOST: '192.0.2.1',
      REMOTE_PORT: '40000',
      REDIRECT_STATUS: '200',
      HTTP_HOST: 'example.org:8080',
      HTTP_USER_AGENT: 'test',
    })
  })

  test('QUERY_STRING is always set; PATH_INFO and PATH_TRANSLATED only with a path remainder', () => {
    const env = buildCgiMeta(input({ query: '', pathInfo: '', rawPath: '/cgi-bin/env.sh' }))
    assert.equal(env.QUERY_STRING, '')
    assert.equal(env.REQUEST_URI, '/cgi-bin/env.sh')
    assert.ok(!('PATH_INFO' in env))
    assert.ok(!('PATH_TRANSLATED' in env))
  })

  test('CONTENT_LENGTH if and only if there is a body; CONTENT_TYPE from the header, never HTTP_*', () => {
    assert.ok(!('CONTENT_LENGTH' in buildCgiMeta(input())))
    const env = buildCgiMeta(
      input({
        method: 'POST',
        contentLength: 0,
        rawHeaders: ['Content-Type', 'text/plain', 'Content-Length', '0', 'Content-Encoding', 'gzip'],
      }),
    )
    assert.equal(env.CONTENT_LENGTH, '0')
    assert.equal(env.CONTENT_TYPE, 'text/plain')
    assert.ok(!('HTTP_CONTENT_TYPE' in env))
    assert.ok(!('HTTP_CONTENT_LENGTH' in env))
    // Other Content-* request headers are ordinary headers (git sends Content-Encoding: gzip).
    assert.equal(env.HTTP_CONTENT_ENCODING, 'gzip')
  })

  test('Proxy never becomes HTTP_PROXY (httpoxy), nor Proxy-Authorization', () => {
    const env = buildCgiMeta(
      input({ rawHeaders: ['Proxy', 'http://evil:3128', 'PROXY', 'x', 'Proxy-Authorization', 'Basic eA=='] }),
    )
    assert.ok(!('HTTP_PROXY' in env))
    assert.ok(!('HTTP_PROXY_AUTHORIZATION' in env))
  })

  test('names with anything but letters, digits and "-" are dropped (no underscore collisions)', () => {
    const env = buildCgiMeta(
      input({
        rawHeaders: [
          'X-Forwarded-For',
          '203.0.113.9',
          'X_Forwarded_For',
          '127.0.0.1',
          'X.Dot',
          '1',
          'X-Ok-2',
          'y',
        ],
      }),
    )
    assert.equal(env.HTTP_X_FORWARDED_FOR, '203.0.113.9')
    assert.equal(env.HTTP_X_OK_2, 'y')
    assert.ok(!Object.keys(env).some((k) => k.includes('DOT')))
    assert.equal(headerMetaName('X_Forwarded_For', false), null)
    assert.equal(headerMetaName('x-forwarded-for', false), 'HTTP_X_FORWARDED_FOR')
  })

  test('Authorization only when configured', () => {
    const headers = ['Authorization', 'Basic dTpw']
    assert.ok(!('HTTP_AUTHORIZATION' in buildCgiMeta(input({ rawHeaders: headers }))))
    assert.equal(
      buildCgiMeta(input({ rawHeaders: headers, passAuthorization: true })).HTTP_AUTHORIZATION,
      'Basic dTpw',
    )
  })

  test('repeated headers join with ", ", Cookie with "; ", whatever the case of the name', () => {
    const env = buildCgiMeta(
      input({ rawHeaders: ['Accept', 'a/b', 'accept', 'c/d', 'Cookie', 'a=1', 'COOKIE', 'b=2'] }),
    )
    assert.equal(env.HTTP_ACCEPT, 'a/b, c/d')
    assert.equal(env.HTTP_COOKIE, 'a=1; b=2')
  })

  test('header values reach the script verbatim (shellshock-shaped values included)', () => {
    const value = '() { :; }; echo; /bin/cat /etc/passwd'
    assert.equal(buildCgiMeta(input({ rawHeaders: ['User-Agent', value] })).HTTP_USER_AGENT, value)
  })

  test('HTTPS=on only for TLS; REQUEST_SCHEME follows', () => {
    assert.ok(!('HTTPS' in buildCgiMeta(input())))
    const env = buildCgiMeta(input({ scheme: 'https' }))
    assert.equal(env.HTTPS, 'on')
    assert.equal(env.REQUEST_SCHEME, 'https')
  })

  test('SERVER_NAME falls back to the local address (bracketed for IPv6); SERVER_PORT is always set', () => {
    const env = buildCgiMeta(input({ serverName: '', localAddress: '::1', serverPort: 80 }))
    assert.equal(env.SERVER_NAME, '[::1]')
    assert.equal(env.SERVER_PORT, '80')
    assert.equal(env.SERVER_ADDR, '::1')
  })

  test('AUTH_TYPE and REMOTE_USER only when the server authenticated the client', () => {
    assert.ok(!('AUTH_TYPE' in buildCgiMeta(input())))
    const env = buildCgiMeta(input({ authType: 'Basic', remoteUser: 'alice' }))
    assert.equal(env.AUTH_TYPE, 'Basic')
    assert.equal(env.REMOTE_USER, 'alice')
  })

  test('a script at the root has SCRIPT_NAME ""; PATH_TRANSLATED does not double the slash', () => {
    const env = buildCgiMeta(
      input({ scriptName: '', pathInfo: '/repo.git/info/refs', documentRoot: '/srv/git/' }),
    )
    assert.equal(env.SCRIPT_NAME, '')
    assert.equal(env.PATH_TRANSLATED, '/srv/git/repo.git/info/refs')
  })
})
