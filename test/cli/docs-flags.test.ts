/*
 * docs/configuration.md's flag table lists every flag `gatehouse serve --help` prints, and
 * names no flag that does not exist (issue 17 item 13: the table had drifted from the code).
 */
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { test } from 'node:test'
import { CLI, REPO_ROOT } from '../support/helpers.js'

const FLAG = /--[a-z][a-z-]*[a-z]/g

test('every flag of `gatehouse serve` is in docs/configuration.md, and every flag there exists', () => {
  const help = spawnSync(process.execPath, [CLI, 'serve', '--help'], { encoding: 'utf8', timeout: 20_000 })
  assert.equal(help.status, 0, help.stderr)
  const flags = new Set(help.stdout.match(FLAG))
  flags.delete('--help')
  assert.ok(flags.size > 30, `the help lists the flags (${flags.size} found)`)

  const doc = readFileSync(join(REPO_ROOT, 'docs/configuration.md'), 'utf8')
  const section = doc.split(/^## /m).find((s) => s.startsWith('Command-line flags'))
  assert.ok(section, 'docs/configuration.md has a "Command-line flags" section')
  const documented = new Set(section.match(FLAG))

  const undocumented = [...flags].filter((f) => !documented.has(f))
  assert.deepEqual(undocumented, [], 'flags missing from the table')
  const unknown = [...documented].filter((f) => !flags.has(f))
  assert.deepEqual(unknown, [], 'flags in the table that `serve --help` does not know')
})
