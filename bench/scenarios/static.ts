/*
 * Static files: the same 1 KB file from disk, Gatehouse's `static` action against nginx's
 * `root`. Both sides cache the file's metadata and revalidate it once per second
 * (Gatehouse's static cache, nginx's open_file_cache); Gatehouse also keeps small bodies
 * in memory where nginx uses sendfile.
 */
import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { nginxPeer } from '../peers/nginx.js'
import type { Scenario } from '../scenario.js'

const FILE = 'file-1k.txt'

function docroot(tmpDir: string): string {
  return join(tmpDir, 'docroot')
}

function writeFile1k(tmpDir: string): void {
  mkdirSync(docroot(tmpDir), { mode: 0o755 })
  // 1024 bytes of printable text, 64 per line.
  const line = `${'0123456789abcdef'.repeat(4).slice(0, 63)}\n`
  writeFileSync(join(docroot(tmpDir), FILE), line.repeat(16), { mode: 0o644 })
}

export const staticScenarios: Scenario[] = [
  {
    name: 'static',
    description: `GET /${FILE}: a 1 KB file served from disk (Gatehouse static action vs nginx root)`,
    path: `/${FILE}`,
    prepare: (tmpDir) => writeFile1k(tmpDir),
    gatehouse: (tmpDir) => ({
      config: { routes: [{ path: '/', static: { root: docroot(tmpDir) } }] },
    }),
    peer: nginxPeer({ server: (tmpDir) => `    location / { root ${docroot(tmpDir)}; }` }),
  },
  ...(['https', 'h2'] as const).map((transport): Scenario => ({
    name: transport === 'h2' ? 'static-h2' : 'static-https',
    description:
      transport === 'h2'
        ? `GET /${FILE} over HTTP/2 (TLS, h2load -m 10): Gatehouse static vs nginx (ssl http2), the same certificate`
        : `GET /${FILE} over HTTPS/1.1 (wrk): Gatehouse static vs nginx (ssl), the same certificate`,
    transport,
    path: `/${FILE}`,
    prepare: (tmpDir) => writeFile1k(tmpDir),
    gatehouse: (tmpDir) => ({
      config: { routes: [{ path: '/', static: { root: docroot(tmpDir) } }] },
    }),
    peer: nginxPeer({ tls: true, server: (tmpDir) => `    location / { root ${docroot(tmpDir)}; }` }),
  })),
]
