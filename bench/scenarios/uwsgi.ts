/*
 * uwsgi: Gatehouse's `uwsgi` action against nginx's `uwsgi_pass`, both in front of the
 * same uWSGI instance (started once per scenario, shared, its memory counted on neither
 * side) running the Flask app of the uwsgi tests. A uwsgi reply ends when the connection
 * closes, so both fronts open one connection per request.
 */
import { accessSync, constants, copyFileSync, mkdirSync } from 'node:fs'
import { join } from 'node:path'
import { nginxPeer } from '../peers/nginx.js'
import { type ServerHandle, spawnServer, waitForUnixSocket } from '../processes.js'
import type { BackendDefinition, Scenario } from '../scenario.js'

const UWSGI = process.env.GATEHOUSE_BENCH_UWSGI ?? '/usr/bin/uwsgi'
const APP = new URL('../../../test/fixtures/uwsgi/app.py', import.meta.url)
const PROCESSES = 2

const appDir = (tmpDir: string) => join(tmpDir, 'app')
const socket = (tmpDir: string) => join(tmpDir, 'uwsgi.sock')

const backend: BackendDefinition = {
  name: 'uWSGI',
  unavailable() {
    try {
      accessSync(UWSGI, constants.X_OK)
      return undefined
    } catch {
      return `${UWSGI} not found (Debian packages uwsgi uwsgi-plugin-python3 python3-flask)`
    }
  },
  async start(tmpDir): Promise<ServerHandle> {
    mkdirSync(appDir(tmpDir), { mode: 0o755 })
    copyFileSync(APP, join(appDir(tmpDir), 'app.py'))
    const handle = spawnServer(
      UWSGI,
      [
        '--plugin',
        'python3',
        '--socket',
        socket(tmpDir),
        '--chmod-socket=666',
        '--chdir',
        appDir(tmpDir),
        '--module',
        'app:application',
        '--master',
        '--processes',
        String(PROCESSES),
        '--disable-logging',
        '--buffer-size',
        '65535',
        '--listen',
        '1024',
      ],
      { stopSignal: 'SIGINT' },
    )
    try {
      await waitForUnixSocket(socket(tmpDir), { server: handle, what: 'uWSGI' })
    } catch (err) {
      await handle.stop()
      throw err
    }
    return handle
  },
}

export const uwsgiScenarios: Scenario[] = [
  {
    name: 'uwsgi',
    description: `GET /hello: a Flask route on uWSGI (${PROCESSES} processes), Gatehouse uwsgi action vs nginx uwsgi_pass`,
    path: '/hello',
    backend,
    gatehouse: (tmpDir) => ({
      config: { routes: [{ path: '/', uwsgi: { pass: `unix:${socket(tmpDir)}` } }] },
    }),
    peer: nginxPeer({
      server: (tmpDir) => `    location / {
      include /etc/nginx/uwsgi_params;
      uwsgi_pass unix:${socket(tmpDir)};
    }`,
    }),
  },
]
