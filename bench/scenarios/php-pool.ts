/*
 * Gatehouse running PHP itself (the php action without `fastcgi`: a managed pool of
 * php-cgi workers) against the usual deployment it replaces, nginx + php-fpm. Same number
 * of PHP workers on both sides, static pools, no recycling; every process of each side is
 * counted (Gatehouse and its php-cgi workers; nginx, php-fpm master and its workers).
 */
import type { PeerDefinition, ServerHandle } from '../scenario.js'
import { phpFpmBackend } from '../peers/php-fpm.js'
import type { Scenario } from '../scenario.js'
import { docroot, nginx, prepare } from './php.js'

/** PHP workers on each side. */
const WORKERS = 4

const fpm = phpFpmBackend({ maxChildren: WORKERS })

/** nginx in front of its own php-fpm: one side, two process trees. */
const nginxPhpFpm: PeerDefinition = {
  name: 'nginx+fpm',
  unavailable: () => fpm.unavailable?.() ?? nginx.unavailable?.(),
  async start(tmpDir, port): Promise<ServerHandle> {
    const pool = await fpm.start(tmpDir)
    let front: ServerHandle
    try {
      front = await nginx.start(tmpDir, port)
    } catch (err) {
      await pool.stop()
      throw err
    }
    return {
      pid: front.pid,
      extraPids: [pool.pid],
      stop: async () => {
        await front.stop()
        await pool.stop()
      },
      ...(front.exitStatus ? { exitStatus: () => front.exitStatus!() } : {}),
      output: () => `${front.output?.() ?? ''}${pool.output?.() ?? ''}`,
    }
  },
}

const gatehouse = (tmpDir: string) => ({
  config: {
    routes: [
      {
        path: '/',
        php: {
          root: docroot(tmpDir),
          workers: { pm: 'static' as const, max_children: WORKERS, max_requests: 0 },
        },
      },
    ],
  },
})

export const phpPoolScenarios: Scenario[] = [
  {
    name: 'php-pool-hello',
    description: `GET /hello.php: a 6-byte PHP page, Gatehouse with its own php-cgi pool vs nginx + php-fpm (${WORKERS} static workers each)`,
    path: '/hello.php',
    prepare,
    gatehouse,
    peer: nginxPhpFpm,
  },
]
