/* global URL, console, process -- a Node script outside the TypeScript build */
// Probe for docs/architecture.md, "Using more than one core": what a front thread's lease of a
// pool worker costs when the pool lives in another thread and is asked over a MessagePort
// (acquire, reply, release; 64 in flight as under wrk -c64), against a compare-and-swap on a
// slot count in a SharedArrayBuffer.   node bench/probes/lease-cost.mjs
import { Worker, isMainThread, parentPort } from 'node:worker_threads'

const N = 100_000

if (isMainThread) {
  const front = new Worker(new URL(import.meta.url))
  const cpu = process.cpuUsage()
  front.on('message', (m) => {
    if (m.t === 'acquire') front.postMessage({ id: m.id, worker: 1, socket: '/run/gatehouse/w1.sock' })
    else if (m.t === 'done') {
      const used = process.cpuUsage(cpu)
      console.log(
        `MessagePort lease: ${((used.user + used.system) / N).toFixed(2)} us of the pool thread's CPU per lease,`,
        `${(m.wallNs / N / 1000).toFixed(2)} us of the front's wall time per lease`,
      )
      void front.terminate()
      const slots = new Int32Array(new SharedArrayBuffer(64))
      const t = process.hrtime.bigint()
      for (let i = 0; i < 10 * N; i++) {
        const c = Atomics.load(slots, 0)
        if (c < 5 && Atomics.compareExchange(slots, 0, c, c + 1) === c) Atomics.sub(slots, 0, 1)
      }
      console.log(
        `SharedArrayBuffer lease (CAS, then release): ${(Number(process.hrtime.bigint() - t) / (10 * N)).toFixed(1)} ns`,
      )
    }
  })
} else {
  const pending = new Map()
  let id = 0
  let left = N
  parentPort.on('message', (m) => {
    pending.get(m.id)(m)
    pending.delete(m.id)
  })
  const t = process.hrtime.bigint()
  const loop = async () => {
    while (left-- > 0) {
      const i = ++id
      const leased = new Promise((resolve) => pending.set(i, resolve))
      parentPort.postMessage({ t: 'acquire', id: i })
      await leased
      parentPort.postMessage({ t: 'release', id: i })
    }
  }
  await Promise.all(Array.from({ length: 64 }, loop))
  parentPort.postMessage({ t: 'done', wallNs: Number(process.hrtime.bigint() - t) })
}
