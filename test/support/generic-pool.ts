/*
 * A WorkerPool of the generic worker (test/fixtures/supervisor/worker.py: binds the socket
 * it is given, answers each line `MS` with its pid after MS ms), for the pool's own tests.
 */
import { connect } from 'node:net'
import { join } from 'node:path'
import pino from 'pino'
import type { WorkerLease } from '../../src/process/lease.js'
import { WorkerPool } from '../../src/process/pool.js'
import { type PoolConfigInput, poolSettings, poolSettingsSchema } from '../../src/process/settings.js'
import { FIXTURES, PYTHON } from './helpers.js'

const WORKER = join(FIXTURES, 'supervisor/worker.py')

/** A pool stopped after the test; `lines` is its log, parsed. `env` goes to the workers. */
export function makePool(
  t: { after: (fn: () => Promise<void> | void) => void },
  config: PoolConfigInput,
  extra: Parameters<typeof poolSettings>[2] = {},
  env: Record<string, string> = {},
) {
  const lines: Record<string, unknown>[] = []
  const log = pino({ level: 'debug' }, { write: (s: string) => lines.push(JSON.parse(s)) })
  const settings = poolSettings('py', poolSettingsSchema().parse(config), {
    stop_signal: 'SIGTERM',
    ...extra,
  })
  const pool = new WorkerPool(
    { command: PYTHON, args: ['-u', WORKER, '{socket}'], env: { ...env } },
    settings,
    log,
  )
  t.after(() => pool.close(0))
  return { pool, lines }
}

/** One line over the leased worker's socket: the worker sleeps `ms` and answers its pid. */
export function ask(lease: WorkerLease, ms = 0): Promise<number> {
  return new Promise((resolve, reject) => {
    const socket = connect(lease.socketPath)
    let data = ''
    socket.on('connect', () => socket.write(`${ms}\n`))
    socket.on('data', (d) => {
      data += d.toString()
      if (data.endsWith('\n')) {
        socket.destroy()
        resolve(Number(data.trim()))
      }
    })
    socket.on('error', reject)
    socket.on('close', () => {
      if (!data.endsWith('\n')) reject(new Error('closed without an answer'))
    })
  })
}
