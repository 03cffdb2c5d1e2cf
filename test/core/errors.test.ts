import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { test } from 'node:test'
import { ERROR_CODES, GatehouseError } from '../../src/core/errors.js'
import { REPO_ROOT } from '../support/helpers.js'

test('docs/errors.md lists exactly the registered codes, with their status and message', () => {
  const doc = readFileSync(join(REPO_ROOT, 'docs/errors.md'), 'utf8')
  const rows = new Map<string, { status: string; message: string }>()
  for (const line of doc.split('\n')) {
    const m = /^\|\s*`(GH_ERR_[A-Z0-9_]+)`\s*\|([^|]+)\|([^|]+)\|/.exec(line)
    if (m) rows.set(m[1]!, { status: m[2]!.trim(), message: m[3]!.trim() })
  }
  assert.deepEqual([...rows.keys()].sort(), Object.keys(ERROR_CODES).sort())
  for (const [code, def] of Object.entries(ERROR_CODES)) {
    const row = rows.get(code)!
    assert.equal(row.status, def.status === undefined ? '-' : String(def.status), code)
    assert.equal(row.message, def.message, code)
  }
})

test('a merged code is gone from the registry, and docs/errors.md names it in the row of the code that took it over', () => {
  const doc = readFileSync(join(REPO_ROOT, 'docs/errors.md'), 'utf8')
  const merged: [gone: string, into: keyof typeof ERROR_CODES][] = [
    ['GH_ERR_WORKER_GONE', 'GH_ERR_WORKER_DIED'],
  ]
  for (const [gone, into] of merged) {
    assert.equal(Object.hasOwn(ERROR_CODES, gone), false, gone)
    const row = doc.split('\n').find((line) => line.startsWith(`| \`${into}\``))
    assert.ok(row?.includes(`\`${gone}\``), `the ${into} row names ${gone}`)
  }
})

test('GatehouseError carries code, status, cause and problems', () => {
  const cause = new Error('boom')
  const err = new GatehouseError('GH_ERR_UPSTREAM', 'php-fpm closed the connection', {
    cause,
    problems: ['a'],
  })
  assert.equal(err.code, 'GH_ERR_UPSTREAM')
  assert.equal(err.status, 502)
  assert.equal(err.cause, cause)
  assert.equal(err.message, 'upstream failed or sent an invalid response: php-fpm closed the connection')
  assert.deepEqual(err.problems, ['a'])
})
