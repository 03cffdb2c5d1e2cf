/*
 * src/cli/startup-heap.ts: while the server starts, V8's young generation keeps its initial
 * size (issue 13 item 4: several MB of idle RSS); once startupDone() runs it grows as V8's
 * default lets it. Read from V8's own heap statistics in a child process that loads the
 * module first, as cli/main.ts does, and allocates objects that survive.
 */
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { dirname, join } from 'node:path'
import { test } from 'node:test'
import { fileURLToPath, pathToFileURL } from 'node:url'

const MODULE = pathToFileURL(
  join(dirname(fileURLToPath(import.meta.url)), '../../src/cli/startup-heap.js'),
).href

const SCRIPT = `
import v8 from 'node:v8'
const heap = await import(${JSON.stringify(MODULE)})
const newSpace = () => v8.getHeapSpaceStatistics().find((s) => s.space_name === 'new_space').space_size
const keep = []
for (let i = 0; i < 200000; i++) keep.push({ i, s: 'x'.repeat(20) })
const starting = newSpace()
heap.startupDone()
for (let i = 0; i < 200000; i++) keep.push({ i, s: 'y'.repeat(20) })
console.log(JSON.stringify({ starting, after: newSpace() }))
`

function run(env: Record<string, string>): Promise<{ starting: number; after: number }> {
  return new Promise((resolve, reject) => {
    execFile(
      process.execPath,
      ['--input-type=module', '-e', SCRIPT],
      { env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...env } },
      (err, stdout) =>
        err ? reject(err) : resolve(JSON.parse(stdout) as { starting: number; after: number }),
    )
  })
}

test('the young generation stays small while starting and grows after startupDone', async () => {
  const held = await run({})
  const free = await run({ GATEHOUSE_STARTUP_HEAP: 'default' })
  // Without the hold the same allocations grow the young generation during start-up.
  assert.ok(held.starting < free.starting, JSON.stringify({ held, free }))
  // After startupDone it grows as it does by default.
  assert.ok(held.after > held.starting, JSON.stringify(held))
})
