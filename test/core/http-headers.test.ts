import assert from 'node:assert/strict'
import { test } from 'node:test'
import { HOP_BY_HOP, parseFieldLine } from '../../src/core/http-headers.js'

test('parseFieldLine: name and trimmed value; obs-text and inner whitespace kept', () => {
  assert.deepEqual(parseFieldLine('Content-Type:  text/plain \t'), {
    name: 'Content-Type',
    value: 'text/plain',
    problem: null,
  })
  assert.deepEqual(parseFieldLine('X-Empty:'), { name: 'X-Empty', value: '', problem: null })
  assert.equal(parseFieldLine('X: caf\xe9 a\tb').value, 'caf\xe9 a\tb')
  assert.equal(parseFieldLine('X: a:b').value, 'a:b')
})

test('parseFieldLine: what makes a line not a field', () => {
  assert.equal(parseFieldLine('no colon').problem, 'no-colon')
  assert.equal(parseFieldLine(': no name').problem, 'no-colon')
  assert.equal(parseFieldLine('Bad Name: x').problem, 'name')
  assert.equal(parseFieldLine('X : x').problem, 'name')
  assert.equal(parseFieldLine('X(y): x').problem, 'name')
  for (const c of ['\r', '\n', '\0', '\x7f', '\x1b'])
    assert.equal(parseFieldLine(`X: a${c}b`).problem, 'value')
})

test('HOP_BY_HOP: lower-case names of the fields that belong to one connection', () => {
  for (const name of HOP_BY_HOP) assert.equal(name, name.toLowerCase())
  assert.ok(HOP_BY_HOP.has('transfer-encoding') && HOP_BY_HOP.has('connection'))
  assert.ok(!HOP_BY_HOP.has('content-length'))
})
