/*
 * Python WSGI servers as benchmark peers, listening on 127.0.0.1:PORT with the app in
 * DIR: gunicorn (sync workers, its default) and uWSGI speaking HTTP itself
 * (`--http-socket`, no separate router process).
 */
import { accessSync, constants } from 'node:fs'
import { join } from 'node:path'
import { type ServerHandle, spawnServer, waitForUnixSocket } from '../processes.js'
import { nginxPeer, nginxProxyPeer } from './nginx.js'
import type { PeerDefinition } from '../scenario.js'

export const GUNICORN = process.env.GATEHOUSE_BENCH_GUNICORN ?? '/usr/bin/gunicorn'
export const UWSGI = process.env.GATEHOUSE_BENCH_UWSGI ?? '/usr/bin/uwsgi'

function missing(path: string, packages: string): string | undefined {
  try {
    accessSync(path, constants.X_OK)
    return undefined
  } catch {
    return `${path} not found (Debian packages ${packages})`
  }
}

interface GunicornOptions {
  appDir: (tmpDir: string) => string
  app: string
  workers: number
}

/** gunicorn with sync workers (its default), bound to `bind` (`127.0.0.1:PORT` or `unix:PATH`). */
function startGunicorn(opts: GunicornOptions, tmpDir: string, bind: string) {
  return spawnServer(
    GUNICORN,
    ['-w', String(opts.workers), '-b', bind, '--chdir', opts.appDir(tmpDir), '--backlog', '1024', opts.app],
    { graceMs: 5000 },
  )
}

export function gunicornPeer(opts: GunicornOptions): PeerDefinition {
  return {
    name: 'gunicorn',
    unavailable: () => missing(GUNICORN, 'gunicorn'),
    start: async (tmpDir, port) => startGunicorn(opts, tmpDir, `127.0.0.1:${port}`),
  }
}

/** nginx + gunicorn, the production WSGI stack: sync workers on a Unix socket, nginx proxy_pass with keepalive. */
export function nginxGunicornPeer(opts: GunicornOptions): PeerDefinition {
  return nginxProxyPeer({
    name: 'nginx+gunicorn',
    backend: 'gunicorn',
    unavailable: () => missing(GUNICORN, 'gunicorn'),
    startBackend: (tmpDir, socket) => startGunicorn(opts, tmpDir, `unix:${socket}`),
  })
}

export function uwsgiHttpPeer(opts: {
  appDir: (tmpDir: string) => string
  module: string
  processes: number
}): PeerDefinition {
  return {
    name: 'uWSGI',
    unavailable: () => missing(UWSGI, 'uwsgi uwsgi-plugin-python3'),
    start: async (tmpDir, port) =>
      spawnServer(
        UWSGI,
        [
          '--plugin',
          'python3',
          '--http-socket',
          `127.0.0.1:${port}`,
          '--chdir',
          opts.appDir(tmpDir),
          '--module',
          opts.module,
          '--master',
          '--processes',
          String(opts.processes),
          '--disable-logging',
          '--listen',
          '1024',
        ],
        { stopSignal: 'SIGINT' },
      ),
  }
}

/**
 * nginx in front of uWSGI (`uwsgi_pass` over a Unix socket), the classic production stack:
 * uWSGI's workers and nginx both count on this side (extraPids).
 */
export function nginxUwsgiPeer(opts: {
  appDir: (tmpDir: string) => string
  module: string
  processes: number
  /** nginx serves TLS and HTTP/2 (the scenario's certificate). */
  tls?: boolean
}): PeerDefinition {
  const socket = (tmpDir: string) => join(tmpDir, 'nginx-uwsgi.sock')
  const nginx = nginxPeer({
    name: 'nginx+uWSGI',
    tls: opts.tls === true,
    server: (tmpDir) => `    location / {
      include /etc/nginx/uwsgi_params;
      uwsgi_pass unix:${socket(tmpDir)};
    }`,
  })
  return {
    name: 'nginx+uWSGI',
    unavailable: () => missing(UWSGI, 'uwsgi uwsgi-plugin-python3') ?? nginx.unavailable?.(),
    async start(tmpDir, port): Promise<ServerHandle> {
      const uwsgi = spawnServer(
        UWSGI,
        [
          '--plugin',
          'python3',
          '--socket',
          socket(tmpDir),
          '--chmod-socket=666',
          '--chdir',
          opts.appDir(tmpDir),
          '--module',
          opts.module,
          '--master',
          '--processes',
          String(opts.processes),
          '--disable-logging',
          '--listen',
          '1024',
        ],
        { stopSignal: 'SIGINT' },
      )
      try {
        await waitForUnixSocket(socket(tmpDir), { server: uwsgi, what: 'uWSGI' })
      } catch (err) {
        await uwsgi.stop()
        throw err
      }
      const front = await nginx.start(tmpDir, port)
      return {
        pid: front.pid,
        extraPids: [uwsgi.pid],
        stop: async () => {
          await front.stop()
          await uwsgi.stop()
        },
        exitStatus: () => front.exitStatus?.() ?? uwsgi.exitStatus?.(),
        output: () => `${front.output?.() ?? ''}${uwsgi.output?.() ?? ''}`,
      }
    },
  }
}
