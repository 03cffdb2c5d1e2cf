import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { test } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { Deadlines } from '../../src/process/deadlines.js'

test('entries fire once each, in order, after their time; cancelled ones never', async () => {
  const list = new Deadlines(30)
  const fired: number[] = []
  const handles = [1, 2, 3, 4].map((n) => list.add(() => fired.push(n)))
  handles[1]!.cancel()
  handles[1]!.cancel() // twice is harmless
  assert.equal(list.size, 3)
  assert.deepEqual(fired, [], 'nothing before its time')
  while (fired.length < 3) await sleep(10)
  await sleep(30)
  assert.deepEqual(fired, [1, 3, 4])
  assert.equal(list.size, 0)
  handles[0]!.cancel() // after firing: nothing happens
  assert.equal(list.size, 0)
})

test('an entry added after others fire waits its own full time (the timer is re-armed)', async () => {
  const list = new Deadlines(40)
  const fired: string[] = []
  list.add(() => fired.push('a'))
  await sleep(25)
  const t0 = performance.now()
  let at = 0
  list.add(() => {
    fired.push('b')
    at = performance.now() - t0
  })
  while (fired.length < 2) await sleep(5)
  assert.deepEqual(fired, ['a', 'b'])
  // setTimeout fires no earlier than asked, give or take the 1 ms of clock rounding.
  assert.ok(at >= 38, `b fired after ${at} ms`)
})

test('a callback may add and cancel entries', async () => {
  const list = new Deadlines(15)
  const fired: string[] = []
  const later = list.add(() => fired.push('later'))
  list.add(() => {
    fired.push('first')
    list.add(() => fired.push('added'))
  })
  later.cancel()
  while (fired.length < 2) await sleep(5)
  await sleep(40)
  assert.deepEqual(fired, ['first', 'added'])
})

test('many cancelled entries are compacted and the rest still fire', async () => {
  const list = new Deadlines(20)
  let fired = 0
  const keep: number[] = []
  for (let i = 0; i < 1000; i++) {
    const h = list.add(() => fired++)
    if (i % 10 === 0) keep.push(i)
    else h.cancel()
  }
  assert.equal(list.size, 100)
  while (fired < 100) await sleep(5)
  assert.equal(fired, 100)
  assert.equal(list.size, 0)
})

test('a pending entry holds the event loop; a list with nothing pending does not', () => {
  const module = fileURLToPath(new URL('../../src/process/deadlines.js', import.meta.url))
  const run = (body: string) =>
    spawnSync(
      process.execPath,
      ['--input-type=module', '-e', `import { Deadlines } from ${JSON.stringify(module)}\n${body}`],
      {
        encoding: 'utf8',
        timeout: 20_000,
      },
    )
  const held = run(`const l = new Deadlines(200); l.add(() => console.log('fired'))`)
  assert.equal(held.stdout.trim(), 'fired')
  // Cancelled: the armed timer must not keep the process for 60 s (spawnSync's timeout
  // would kill it: status null).
  const free = run(`const l = new Deadlines(60000); l.add(() => console.log('fired')).cancel()`)
  assert.equal(free.stdout.trim(), '')
  assert.equal(free.status, 0)
})
