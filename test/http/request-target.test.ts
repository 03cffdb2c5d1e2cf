import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import fc from 'fast-check'
import { BadTargetError, normalizePath, parseHost, parseTarget } from '../../src/http/request-target.js'

describe('parseTarget', () => {
  test('origin-form: path and query split at the first "?", query kept raw', () => {
    assert.deepEqual(parseTarget('/a/b?x=1&y=%20'), { rawPath: '/a/b', query: 'x=1&y=%20', path: '/a/b' })
    assert.deepEqual(parseTarget('/a?x?y'), { rawPath: '/a', query: 'x?y', path: '/a' })
    assert.deepEqual(parseTarget('/?'), { rawPath: '/', query: '', path: '/' })
  })

  test('the decoded, normalized path sits beside the raw one', () => {
    const t = parseTarget('/caf%C3%A9//x/./y/../z')
    assert.equal(t.rawPath, '/caf%C3%A9//x/./y/../z')
    assert.equal(t.path, '/café/x/z')
  })

  test('absolute-form carries the authority, which overrides Host', () => {
    assert.deepEqual(parseTarget('http://example.org:8080/p?q'), {
      rawPath: '/p',
      query: 'q',
      path: '/p',
      authority: 'example.org:8080',
    })
    assert.deepEqual(parseTarget('HTTPS://Example.org'), {
      rawPath: '/',
      query: '',
      path: '/',
      authority: 'Example.org',
    })
    assert.deepEqual(parseTarget('http://h?q=1'), { rawPath: '/', query: 'q=1', path: '/', authority: 'h' })
  })

  test('targets that are not a path or an http(s) URI are refused', () => {
    for (const target of ['*', 'foo', 'example.org:443', 'ftp://h/x', 'http://', 'http:///x', '']) {
      assert.throws(() => parseTarget(target), BadTargetError, JSON.stringify(target))
    }
  })

  test('characters outside RFC 3986 pchar are refused in the path', () => {
    for (const target of [
      '/a b',
      '/a#frag',
      '/a"b',
      '/a<b>',
      '/a\\b',
      '/a\0b',
      '/a\tb',
      '/é',
      '/a^b',
      '/a{b}',
    ]) {
      assert.throws(() => parseTarget(target), BadTargetError, JSON.stringify(target))
    }
  })

  test('a path that climbs above the root is refused, however it is spelled', () => {
    for (const target of [
      '/..',
      '/../etc/passwd',
      '/a/../../b',
      '/%2e%2e/x',
      '/%2E%2e/',
      '/.%2e/x',
      '/..%2fx',
      '/a%2f..%2f..%2fb',
      'http://h/a/../..',
    ]) {
      assert.throws(() => parseTarget(target), BadTargetError, target)
    }
  })
})

describe('normalizePath', () => {
  test('paths that need no work come back unchanged', () => {
    for (const p of ['/', '/a', '/a/b/', '/a.b/c..d/...', '/a-b_c~d']) assert.equal(normalizePath(p), p)
  })

  test('percent-escapes are decoded as UTF-8, including %2F', () => {
    assert.equal(normalizePath('/caf%C3%A9'), '/café')
    assert.equal(normalizePath('/a%20b'), '/a b')
    assert.equal(normalizePath('/a%2Fb'), '/a/b')
    assert.equal(normalizePath('/%7e'), '/~')
  })

  test('dot-segments are resolved (RFC 3986 5.2.4) and a trailing slash is kept', () => {
    assert.equal(normalizePath('/a/./b'), '/a/b')
    assert.equal(normalizePath('/a/b/..'), '/a/')
    assert.equal(normalizePath('/a/b/../'), '/a/')
    assert.equal(normalizePath('/a/.'), '/a/')
    assert.equal(normalizePath('/a/b/%2E%2E/c'), '/a/c')
    assert.equal(normalizePath('/a/%2e'), '/a/')
    assert.equal(normalizePath('/a/..'), '/')
    assert.equal(normalizePath('/.'), '/')
  })

  test('runs of slashes are merged', () => {
    assert.equal(normalizePath('//a///b//'), '/a/b/')
    assert.equal(normalizePath('//'), '/')
  })

  test('climbing above the root throws instead of clamping', () => {
    for (const p of ['/..', '/../a', '/a/../..', '/%2e%2e', '/a/%2E%2E/%2e%2e/b', '/..%2F']) {
      assert.throws(() => normalizePath(p), BadTargetError, p)
    }
  })

  test('NUL, malformed escapes and invalid UTF-8 throw', () => {
    for (const p of ['/%00', '/a%00.txt', '/%', '/%z1', '/%4', '/%FF', '/%C3', '/%ED%A0%80']) {
      assert.throws(() => normalizePath(p), BadTargetError, p)
    }
  })

  test('a raw NUL or a path without a leading slash throws', () => {
    for (const p of ['/a\0b', '\0', '', 'a', 'a/b%20', '%2F']) {
      assert.throws(() => normalizePath(p), BadTargetError, JSON.stringify(p))
    }
  })

  test('property: the result starts with "/" and has no dot-segment or NUL, or BadTargetError is thrown', () => {
    const piece = fc.constantFrom(
      '/',
      '//',
      '.',
      '..',
      '%2e',
      '%2E',
      '%2f',
      '%2F',
      '%00',
      '%',
      '%C3%A9',
      '%ff',
      'a',
      'b.c',
      '...',
      '\0',
      '\\',
    )
    const path = fc.oneof(
      fc.array(piece, { maxLength: 12 }).map((parts) => parts.join('')),
      fc.array(piece, { maxLength: 12 }).map((parts) => `/${parts.join('')}`),
      fc.string({ maxLength: 24 }),
    )
    fc.assert(
      fc.property(path, (p) => {
        let out: string
        try {
          out = normalizePath(p)
        } catch (err) {
          return err instanceof BadTargetError
        }
        return (
          out.startsWith('/') && !out.includes('\0') && !/(^|\/)\.\.?(\/|$)/.test(out) && !out.includes('//')
        )
      }),
      { numRuns: 500 },
    )
  })
})

describe('parseHost', () => {
  test('name and port, lower-cased, trailing dot dropped', () => {
    assert.deepEqual(parseHost('Example.COM'), ['example.com', undefined])
    assert.deepEqual(parseHost('example.com:8080'), ['example.com', 8080])
    assert.deepEqual(parseHost('example.com.'), ['example.com', undefined])
    assert.deepEqual(parseHost(' example.com '), ['example.com', undefined])
    assert.deepEqual(parseHost('10.0.0.1:80'), ['10.0.0.1', 80])
  })

  test('IPv6 literals keep their brackets', () => {
    assert.deepEqual(parseHost('[::1]'), ['[::1]', undefined])
    assert.deepEqual(parseHost('[2001:DB8::1]:443'), ['[2001:db8::1]', 443])
  })

  test('an empty Host (allowed by RFC 9112 3.2) is the empty name', () => {
    assert.deepEqual(parseHost(''), ['', undefined])
  })

  test('malformed hosts are null', () => {
    for (const h of [
      'a b',
      'a:',
      'a:99999',
      'a:123456',
      'a:b',
      'a:1:2',
      '[zz]',
      '[::1',
      'user@host',
      'h/x',
    ]) {
      assert.equal(parseHost(h), null, JSON.stringify(h))
    }
  })
})
