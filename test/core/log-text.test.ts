import assert from 'node:assert/strict'
import { test } from 'node:test'
import { listenUrl } from '../../src/core/bind.js'
import { formatRecord } from '../../src/core/log-text.js'
import { errorLogFormat } from '../../src/core/logging.js'

const at = new Date(2026, 11, 4, 6, 5, 9, 7).toISOString()
const line = (record: Record<string, unknown>, colour = false) =>
  formatRecord(JSON.stringify({ level: 30, time: at, pid: 1, ...record }), colour)

test('text line: local time, level, message, key=value; strings with spaces, quotes or controls quoted', () => {
  assert.equal(
    line({
      msg: 'hello',
      a: 'word',
      b: 'two words',
      c: 'say "hi"',
      d: 'esc\x1b[31m',
      n: 3,
      ok: true,
      z: null,
    }),
    '06:05:09.007 INFO  hello a=word b="two words" c="say \\"hi\\"" d="esc\\u001b[31m" n=3 ok=true z=null\n',
  )
  assert.equal(line({ msg: 'x', e: '', eq: 'a=b' }), '06:05:09.007 INFO  x e="" eq="a=b"\n')
})

test('nested objects are dotted keys; a list of words is [a,b]; other lists JSON', () => {
  assert.equal(
    line({ msg: 'm', req: { method: 'GET', url: '/x' }, args: ['-m', 'w'], problems: ['a b', 'c'] }),
    '06:05:09.007 INFO  m req.method=GET req.url=/x args=[-m,w] problems="[\\"a b\\",\\"c\\"]"\n',
  )
})

test('values of several lines follow the line, indented, unescaped; an error is its stack', () => {
  const out = line({
    level: 50,
    msg: 'failed',
    pool: 'py',
    traceback: 'Traceback (most recent call last):\n  File "a.py", line 1\nValueError: "x"\n',
    err: { type: 'Error', message: 'boom', stack: 'Error: boom\n    at f (a.js:1:1)', code: 'E1' },
  })
  assert.equal(
    out,
    [
      '06:05:09.007 ERROR failed pool=py err.code=E1',
      '    traceback:',
      '      Traceback (most recent call last):',
      '        File "a.py", line 1',
      '      ValueError: "x"',
      '    err:',
      '      Error: boom',
      '          at f (a.js:1:1)',
      '',
    ].join('\n'),
  )
})

test('colour only when asked; a line that is not JSON is kept', () => {
  assert.match(
    line({ level: 40, msg: 'w' }, true),
    /^\x1b\[2m06:05:09\.007\x1b\[0m \x1b\[33mWARN \x1b\[0m w\n$/,
  )
  assert.equal(formatRecord('not json', false), 'not json\n')
})

test('auto on a file is JSON; text off a terminal is not coloured (the pty case: log-format.test.ts)', () => {
  assert.deepEqual(errorLogFormat({ format: 'json', error_log: 'stderr' }), { text: false, colour: false })
  assert.deepEqual(errorLogFormat({ format: 'auto', error_log: '/tmp/x.log' }), {
    text: false,
    colour: false,
  })
  assert.deepEqual(errorLogFormat({ format: 'text', error_log: '/tmp/x.log' }), { text: true, colour: false })
})

test('listenUrl: a URL to click; wildcards as loopback; unix sockets as unix:PATH', () => {
  assert.equal(listenUrl({ address: '127.0.0.1:8000', port: 8000 }), 'http://127.0.0.1:8000')
  assert.equal(listenUrl({ address: '0.0.0.0:8000', port: 8000 }), 'http://127.0.0.1:8000')
  assert.equal(listenUrl({ address: '[::]:8000', port: 8000 }), 'http://[::1]:8000')
  assert.equal(listenUrl({ address: '[::1]:8000', port: 8000 }), 'http://[::1]:8000')
  assert.equal(listenUrl({ address: 'unix:/run/gh.sock', path: '/run/gh.sock' }), 'unix:/run/gh.sock')
})
