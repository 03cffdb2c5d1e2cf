/*
 * Python ASGI servers as benchmark peers, listening on 127.0.0.1:PORT with the app in DIR:
 * uvicorn (uvloop + httptools, the fast path), hypercorn and daphne (PEERS.md).
 */
import { accessSync, constants } from 'node:fs'
import { spawnServer } from '../processes.js'
import { nginxProxyPeer } from './nginx.js'
import type { PeerDefinition } from '../scenario.js'

const PYTHON = '/usr/bin/python3'
export const HYPERCORN = process.env.GATEHOUSE_BENCH_HYPERCORN ?? '/usr/bin/hypercorn'

function missing(path: string, packages: string): string | undefined {
  try {
    accessSync(path, constants.X_OK)
    return undefined
  } catch {
    return `${path} not found (Debian packages ${packages})`
  }
}

function missingModule(module: string, packages: string): string | undefined {
  try {
    accessSync(`/usr/lib/python3/dist-packages/${module}`, constants.R_OK)
    return undefined
  } catch {
    return `Python module ${module} not found (Debian packages ${packages})`
  }
}

interface UvicornOptions {
  appDir: (tmpDir: string) => string
  app: string
  workers: number
}

const uvicornUnavailable = () =>
  missingModule('uvicorn', 'python3-uvicorn python3-uvloop python3-httptools') ??
  missingModule('uvloop', 'python3-uvloop') ??
  missingModule('httptools', 'python3-httptools')

/** uvicorn with uvloop and httptools, bound by `bind` (`--host H --port P` or `--uds PATH`). */
function startUvicorn(opts: UvicornOptions, tmpDir: string, bind: readonly string[]) {
  return spawnServer(
    PYTHON,
    [
      '-m',
      'uvicorn',
      '--app-dir',
      opts.appDir(tmpDir),
      ...bind,
      '--workers',
      String(opts.workers),
      '--loop',
      'uvloop',
      '--http',
      'httptools',
      '--no-access-log',
      '--log-level',
      'warning',
      '--backlog',
      '1024',
      opts.app,
    ],
    { graceMs: 5000 },
  )
}

export function uvicornPeer(opts: UvicornOptions): PeerDefinition {
  return {
    name: 'uvicorn',
    unavailable: uvicornUnavailable,
    start: async (tmpDir, port) =>
      startUvicorn(opts, tmpDir, ['--host', '127.0.0.1', '--port', String(port)]),
  }
}

/** nginx + uvicorn, the production ASGI stack: uvicorn on a Unix socket, nginx proxy_pass with keepalive. */
export function nginxUvicornPeer(opts: UvicornOptions): PeerDefinition {
  return nginxProxyPeer({
    name: 'nginx+uvicorn',
    backend: 'uvicorn',
    unavailable: uvicornUnavailable,
    startBackend: (tmpDir, socket) => startUvicorn(opts, tmpDir, ['--uds', socket]),
  })
}

export function hypercornPeer(opts: {
  appDir: (tmpDir: string) => string
  app: string
  workers: number
}): PeerDefinition {
  return {
    name: 'hypercorn',
    unavailable: () => missing(HYPERCORN, 'python3-hypercorn'),
    start: async (tmpDir, port) =>
      spawnServer(
        HYPERCORN,
        [
          '-b',
          `127.0.0.1:${port}`,
          '-w',
          String(opts.workers),
          '--backlog',
          '1024',
          '-k',
          'uvloop',
          opts.app,
        ],
        { cwd: opts.appDir(tmpDir), graceMs: 5000 },
      ),
  }
}

/** daphne has no worker processes: one process, as Django Channels deployments run it per core. */
export function daphnePeer(opts: { appDir: (tmpDir: string) => string; app: string }): PeerDefinition {
  return {
    name: 'daphne',
    unavailable: () => missingModule('daphne', 'python3-daphne'),
    start: async (tmpDir, port) =>
      spawnServer(PYTHON, ['-m', 'daphne', '-b', '127.0.0.1', '-p', String(port), opts.app], {
        cwd: opts.appDir(tmpDir),
        graceMs: 5000,
      }),
  }
}
