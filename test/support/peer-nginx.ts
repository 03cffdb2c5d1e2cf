import { type ChildProcess, spawn } from 'node:child_process'
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { connect, createServer } from 'node:net'
import { join } from 'node:path'

export interface NginxPeer {
  port: number
  origin: string
  errorLog(): string
  stop(): Promise<void>
}

/** A port the OS reports free right now (nginx cannot be told to pick one itself). */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = createServer()
    probe.once('error', reject)
    probe.listen(0, '127.0.0.1', () => {
      const { port } = probe.address() as { port: number }
      probe.close(() => resolve(port))
    })
  })
}

function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(port, '127.0.0.1')
    s.once('connect', () => {
      s.destroy()
      resolve(true)
    })
    s.once('error', () => resolve(false))
  })
}

/**
 * Start nginx (Debian's nginx-light) in the foreground with everything under `dir`: pid,
 * error log, temp paths. `server` is the body of the one server block (locations); `http`
 * adds directives to the http block. Stopped when the test ends.
 */
export async function startNginx(
  t: { after: (fn: () => Promise<void>) => void },
  dir: string,
  options: { server: string; http?: string },
): Promise<NginxPeer> {
  const prefix = join(dir, 'nginx')
  mkdirSync(prefix, { recursive: true })
  const errorLog = join(prefix, 'error.log')
  // Three tries: the port could be taken between the probe and nginx's bind.
  for (let attempt = 0; ; attempt++) {
    const port = await freePort()
    const conf = `daemon off;
${process.getuid?.() === 0 ? 'user root;' : ''}
worker_processes 1;
pid ${prefix}/nginx.pid;
error_log ${errorLog} info;
events { worker_connections 64; }
http {
  access_log off;
  client_body_temp_path ${prefix}/client_body;
  proxy_temp_path ${prefix}/proxy;
  fastcgi_temp_path ${prefix}/fastcgi;
  uwsgi_temp_path ${prefix}/uwsgi;
  scgi_temp_path ${prefix}/scgi;
  ${options.http ?? ''}
  server {
    listen 127.0.0.1:${port};
    ${options.server}
  }
}
`
    writeFileSync(join(prefix, 'nginx.conf'), conf)
    const child: ChildProcess = spawn(
      '/usr/sbin/nginx',
      ['-c', join(prefix, 'nginx.conf'), '-p', `${prefix}/`, '-e', errorLog],
      {
        stdio: ['ignore', 'ignore', 'pipe'],
      },
    )
    let stderr = ''
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()))
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
    const stop = async () => {
      if (child.exitCode !== null || child.signalCode !== null) return
      child.kill('SIGTERM')
      const timer = setTimeout(() => child.kill('SIGKILL'), 10_000)
      await exited
      clearTimeout(timer)
    }
    t.after(stop)
    const deadline = Date.now() + 15_000
    while (child.exitCode === null && child.signalCode === null && Date.now() < deadline) {
      if (await canConnect(port)) {
        const read = () => {
          try {
            return readFileSync(errorLog, 'utf8')
          } catch {
            return ''
          }
        }
        return { port, origin: `http://127.0.0.1:${port}`, errorLog: read, stop }
      }
      await new Promise((r) => setTimeout(r, 50))
    }
    await stop()
    if (attempt === 2 || !/Address already in use/.test(stderr))
      throw new Error(`nginx did not start:\n${stderr}`)
  }
}
