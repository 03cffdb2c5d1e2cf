/*
 * CGI: a hello-world /bin/sh script, one process per request on both sides. Gatehouse's
 * `cgi` action forks the script itself; the peer is the usual way to run CGI behind nginx,
 * nginx `fastcgi_pass` to fcgiwrap (Debian `fcgiwrap`), which forks it. fcgiwrap gets two
 * preforked processes (one per core), and its RSS is counted with nginx's.
 */
import { mkdirSync, statSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { nginxPeer } from '../peers/nginx.js'
import { spawnServer, waitForUnixSocket } from '../processes.js'
import type { PeerDefinition, Scenario } from '../scenario.js'

const FCGIWRAP = '/usr/sbin/fcgiwrap'
const SCRIPT = '#!/bin/sh\nprintf "Content-Type: text/plain\\r\\n\\r\\nhello\\n"\n'

const cgiDir = (tmpDir: string) => join(tmpDir, 'cgi-bin')
const socket = (tmpDir: string) => join(tmpDir, 'fcgiwrap.sock')

const nginx = nginxPeer({
  name: 'nginx+fcgiwrap',
  server: (tmpDir) => `    location /cgi-bin/ {
      include /etc/nginx/fastcgi_params;
      fastcgi_param SCRIPT_FILENAME ${tmpDir}$fastcgi_script_name;
      fastcgi_pass unix:${socket(tmpDir)};
    }`,
})

const nginxWithFcgiwrap: PeerDefinition = {
  name: nginx.name,
  unavailable: () =>
    nginx.unavailable?.() ??
    (existsExecutable(FCGIWRAP) ? undefined : `${FCGIWRAP} not found (Debian package fcgiwrap)`),
  async start(tmpDir, port) {
    const wrap = spawnServer(FCGIWRAP, ['-c', '2', '-s', `unix:${socket(tmpDir)}`])
    await waitForUnixSocket(socket(tmpDir), { server: wrap, what: 'fcgiwrap' })
    const front = await nginx.start(tmpDir, port)
    return {
      pid: front.pid,
      extraPids: [wrap.pid],
      async stop() {
        await Promise.all([front.stop(), wrap.stop()])
      },
      exitStatus: () => front.exitStatus?.() ?? wrap.exitStatus?.(),
      output: () => `${front.output?.() ?? ''}${wrap.output?.() ?? ''}`,
    }
  },
}

function existsExecutable(path: string): boolean {
  try {
    return statSync(path).isFile()
  } catch {
    return false
  }
}

export const cgiScenarios: Scenario[] = [
  {
    name: 'cgi',
    description:
      'GET /cgi-bin/hello.sh: a /bin/sh CGI script, a process per request (Gatehouse cgi vs nginx + fcgiwrap)',
    path: '/cgi-bin/hello.sh',
    prepare(tmpDir) {
      mkdirSync(cgiDir(tmpDir), { mode: 0o755 })
      writeFileSync(join(cgiDir(tmpDir), 'hello.sh'), SCRIPT, { mode: 0o755 })
    },
    gatehouse: (tmpDir) => ({
      config: { routes: [{ path: '/cgi-bin', cgi: { root: cgiDir(tmpDir), max_processes: 64 } }] },
    }),
    peer: nginxWithFcgiwrap,
  },
]
