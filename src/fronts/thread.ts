/*
 * A front thread (front_processes > 1): the HTTP front, the router and the gateways' request
 * code, on listening sockets shared with the main thread (each front has its own descriptor
 * of them: copy-fd.ts) and on pools that live in the main thread (leases asked for over
 * this thread's port: src/process/remote-pool.ts). Started by manager.ts.
 */
import { parentPort, workerData } from 'node:worker_threads'
import type { GatehouseConfig } from '../config.js'
import { Gatehouse } from '../gatehouse.js'
import { loadGatewaysFor } from '../gateways/index.js'
import { GatehouseError } from '../core/errors.js'
import type { MainOp } from '../process/pool-broker.js'
import { PoolClient } from '../process/remote-pool.js'
import type { PoolEntry } from '../process/pool-broker.js'
import type { FromFront, FrontData, ToFront } from './messages.js'
import type { RenderedPage } from '../core/types.js'

const port = parentPort!
const data = workerData as FrontData
const post = (m: FromFront) => port.postMessage(m)
const client = new PoolClient(port)
let pools: Record<string, PoolEntry> = data.pools

async function main(): Promise<void> {
  await loadGatewaysFor(data.config)
  const gatehouse = new Gatehouse(data.config, {
    front: data.index,
    poolSite: (key) => ({
      provide: <T>(): T => {
        const entry = pools[key]
        if (!entry)
          throw new GatehouseError(
            'GH_ERR_WORKER_START',
            `front ${data.index}: the main thread has no pool for ${key}`,
          )
        return client.pool(entry.id, entry.settings) as T
      },
    }),
  })
  let stopping = false
  let asked = 0
  const renders = new Map<number, (page: RenderedPage) => void>()
  gatehouse.relay = (route, query) =>
    new Promise((resolve) => {
      const seq = ++asked
      renders.set(seq, resolve)
      post(['render', seq, route, query])
    })
  port.on('message', (m: ToFront) => {
    switch (m[0]) {
      case 'pool':
        client.handle(m[1] as MainOp[])
        break
      case 'apply': {
        const [, seq, config, settings] = m
        pools = settings
        loadGatewaysFor(config)
          .then(() => gatehouse.apply(config as GatehouseConfig))
          .then(
            () => post(['applied', seq, null]),
            (err: unknown) => post(['applied', seq, err instanceof Error ? err.message : String(err)]),
          )
        break
      }
      case 'stop':
        if (stopping) break
        stopping = true
        gatehouse.close(m[1], m[2]).then(
          () => process.exit(0),
          () => process.exit(1),
        )
        break
      case 'rendered':
        renders.get(m[1])?.(m[2])
        renders.delete(m[1])
        break
      case 'reopen':
        gatehouse.reopenLogs()
        break
      case 'figures':
        void gatehouse.frontFigures(data.index).then((f) => post(['figures', m[1], f]))
        break
    }
  })
  try {
    const bound = await gatehouse.listen()
    post(['ready', bound.map((b) => b.address)])
  } catch (err) {
    post(['failed', err instanceof Error ? err.message : String(err)])
    process.exit(1)
  }
}

void main()
