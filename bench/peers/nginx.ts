/*
 * nginx as a peer: one master and one worker process (the Gatehouse side is one Node
 * process), access log off on both sides, keep-alive unlimited on both sides (nginx's
 * default keepalive_requests of 1000 would make wrk reconnect every 1000 requests, which
 * Gatehouse does not), and the settings a production static server has: sendfile, and an
 * open-file cache revalidated every second like Gatehouse's static cache.
 */
import { accessSync, constants, mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { type ServerHandle, spawnServer, waitForUnixSocket } from '../processes.js'
import type { PeerDefinition } from '../scenario.js'
import { benchCertificate } from '../tls.js'

export const NGINX = process.env.GATEHOUSE_BENCH_NGINX ?? '/usr/sbin/nginx'

export interface NginxPeerOptions {
  /** Table name; default "nginx". */
  name?: string
  /** Directives inside `server { }` after `listen`, e.g. `location / { root /x; }`. */
  server(tmpDir: string): string
  /** Extra directives inside `http { }`. */
  http?(tmpDir: string): string
  /** Serve TLS with the scenario's certificate (bench/tls.ts), with HTTP/2 (nginx's `http2`). */
  tls?: boolean
}

/** The `listen` parameters and certificate lines of a TLS server block (nginx 1.22 syntax). */
function tlsServer(tmpDir: string): { listen: string; lines: string } {
  const { cert, key } = benchCertificate(tmpDir)
  return {
    listen: ' ssl http2',
    lines: `    ssl_certificate ${cert};
    ssl_certificate_key ${key};
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache shared:SSL:10m;
    http2_max_concurrent_streams 128;
`,
  }
}

export function nginxConfig(
  prefix: string,
  port: number,
  server: string,
  http = '',
  tls?: { listen: string; lines: string },
): string {
  // As root, nginx would switch its workers to an unprivileged user that may not read the
  // temp dir; staying root is allowed and sidesteps it. Without root the directive is ignored.
  const user = process.getuid?.() === 0 ? 'user root;\n' : ''
  return `${user}pid ${prefix}/nginx.pid;
error_log ${prefix}/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path ${prefix}/tmp/client_body;
  proxy_temp_path ${prefix}/tmp/proxy;
  fastcgi_temp_path ${prefix}/tmp/fastcgi;
  uwsgi_temp_path ${prefix}/tmp/uwsgi;
  scgi_temp_path ${prefix}/tmp/scgi;
  types { text/html html; text/plain txt; application/json json; }
  default_type text/plain;
  sendfile on;
  tcp_nopush on;
  keepalive_timeout 5s;
  keepalive_requests 1000000000;
  open_file_cache max=1000 inactive=20s;
  open_file_cache_valid 1s;
${http}
  server {
    listen 127.0.0.1:${port}${tls?.listen ?? ''};
    server_name localhost;
${tls?.lines ?? ''}${server}
  }
}
`
}

export function nginxPeer(opts: NginxPeerOptions): PeerDefinition {
  return {
    name: opts.name ?? 'nginx',
    unavailable() {
      try {
        accessSync(NGINX, constants.X_OK)
        return undefined
      } catch {
        return `${NGINX} not found (Debian package nginx-light; or set GATEHOUSE_BENCH_NGINX)`
      }
    },
    async start(tmpDir, port): Promise<ServerHandle> {
      const prefix = join(tmpDir, `${opts.name ?? 'nginx'}-prefix`)
      mkdirSync(join(prefix, 'tmp'), { recursive: true, mode: 0o755 })
      const conf = join(prefix, 'nginx.conf')
      const tls = opts.tls ? tlsServer(tmpDir) : undefined
      writeFileSync(conf, nginxConfig(prefix, port, opts.server(tmpDir), opts.http?.(tmpDir) ?? '', tls), {
        mode: 0o644,
      })
      // -e: the error log before the config is read (default: stderr on Debian builds).
      return spawnServer(NGINX, [
        '-c',
        conf,
        '-p',
        `${prefix}/`,
        '-e',
        join(prefix, 'error.log'),
        '-g',
        'daemon off; master_process on; worker_processes 1;',
      ])
    },
  }
}

/**
 * nginx in front of an HTTP app server on a Unix socket, as production deploys uvicorn and
 * gunicorn: `proxy_pass` to an upstream with kept-alive connections (`keepalive 32`, which
 * needs HTTP/1.1 and an empty Connection header towards the upstream). The backend's
 * processes count on this side too (extraPids).
 */
export function nginxProxyPeer(opts: {
  name: string
  /** What the backend is, for messages ("uvicorn"). */
  backend: string
  unavailable(): string | undefined
  /** Start the backend listening on the Unix socket `socket`. */
  startBackend(tmpDir: string, socket: string): ServerHandle
}): PeerDefinition {
  const socket = (tmpDir: string) => join(tmpDir, 'nginx-upstream.sock')
  const nginx = nginxPeer({
    name: opts.name,
    http: (tmpDir) => `  upstream app {
    server unix:${socket(tmpDir)};
    keepalive 32;
  }`,
    server: () => `    location / {
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
    }`,
  })
  return {
    name: opts.name,
    unavailable: () => opts.unavailable() ?? nginx.unavailable?.(),
    async start(tmpDir, port): Promise<ServerHandle> {
      const backend = opts.startBackend(tmpDir, socket(tmpDir))
      try {
        await waitForUnixSocket(socket(tmpDir), { server: backend, what: opts.backend })
      } catch (err) {
        await backend.stop()
        throw err
      }
      const front = await nginx.start(tmpDir, port)
      return {
        pid: front.pid,
        extraPids: [backend.pid],
        stop: async () => {
          await front.stop()
          await backend.stop()
        },
        exitStatus: () => front.exitStatus?.() ?? backend.exitStatus?.(),
        output: () => `${front.output?.() ?? ''}${backend.output?.() ?? ''}`,
      }
    },
  }
}
