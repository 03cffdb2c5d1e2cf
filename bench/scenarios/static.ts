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

export const staticScenarios: Scenario[] = [
  {
    name: 'static',
    description: `GET /${FILE}: a 1 KB file served from disk (Gatehouse static action vs nginx root)`,
    path: `/${FILE}`,
    prepare(tmpDir) {
      mkdirSync(docroot(tmpDir), { mode: 0o755 })
      // 1024 bytes of printable text, 64 per line.
      const line = `${'0123456789abcdef'.repeat(4).slice(0, 63)}\n`
      writeFileSync(join(docroot(tmpDir), FILE), line.repeat(16), { mode: 0o644 })
    },
    gatehouse: (tmpDir) => ({
      config: { routes: [{ path: '/', static: { root: docroot(tmpDir) } }] },
    }),
    peer: nginxPeer({ server: (tmpDir) => `    location / { root ${docroot(tmpDir)}; }` }),
  },
]
