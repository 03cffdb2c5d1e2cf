/*
 * proxy: Gatehouse's `proxy` action against nginx's `proxy_pass`, both in front of the same
 * Node hello server (started once per scenario, shared; its CPU is reported apart). nginx
 * keeps its upstream connections alive (`keepalive 64`, one per wrk connection, HTTP/1.1, an
 * empty Connection), as Gatehouse does by default: without it nginx opens a connection per
 * request, and with fewer idle slots than concurrent requests it still opens and closes some.
 */
import { fileURLToPath } from 'node:url'
import { nginxPeer } from '../peers/nginx.js'
import { freePort, type ServerHandle, spawnServer, waitForPort } from '../processes.js'
import type { BackendDefinition, Scenario } from '../scenario.js'

const HELLO = fileURLToPath(new URL('../peers/node-hello.js', import.meta.url))
/** The backend's port, by the scenario's temp dir. */
const ports = new Map<string, number>()
const portOf = (tmpDir: string) => {
  const port = ports.get(tmpDir)
  if (port === undefined) throw new Error('the Node hello backend is not started')
  return port
}

const backend: BackendDefinition = {
  name: 'node-hello',
  async start(tmpDir): Promise<ServerHandle> {
    const port = await freePort()
    ports.set(tmpDir, port)
    const handle = spawnServer(process.execPath, [HELLO, String(port)], {
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin' },
    })
    try {
      await waitForPort(port, { server: handle, what: 'the Node hello server' })
    } catch (err) {
      await handle.stop()
      throw err
    }
    return handle
  },
}

export const proxyScenarios: Scenario[] = [
  {
    name: 'proxy-node-hello',
    description:
      'GET /: a node:http hello server, Gatehouse proxy action vs nginx proxy_pass with a keepalive upstream',
    path: '/',
    backend,
    gatehouse: (tmpDir) => ({
      config: { routes: [{ path: '/', proxy: { upstream: `http://127.0.0.1:${portOf(tmpDir)}` } }] },
    }),
    peer: nginxPeer({
      http: (tmpDir) => `  upstream hello {
    server 127.0.0.1:${portOf(tmpDir)};
    keepalive 64;
  }`,
      server: () => `    location / {
      proxy_pass http://hello;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
    }`,
    }),
  },
]
