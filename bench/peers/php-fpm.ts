/*
 * php-fpm as a shared backend: one static pool on a Unix socket in the scenario's temp dir,
 * serving both Gatehouse's php action and nginx's fastcgi_pass, so that the two fronts are
 * compared in front of the very same PHP workers.
 */
import { accessSync, constants, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { type ServerHandle, spawnServer, waitForUnixSocket } from '../processes.js'
import type { BackendDefinition } from '../scenario.js'

export const PHP_FPM = process.env.GATEHOUSE_BENCH_PHP_FPM ?? '/usr/sbin/php-fpm8.2'

/** Where the pool listens, for both sides' configuration. */
export function phpFpmSocket(tmpDir: string): string {
  return join(tmpDir, 'php-fpm.sock')
}

export function phpFpmBackend(opts: { maxChildren: number }): BackendDefinition {
  return {
    name: 'php-fpm',
    unavailable() {
      try {
        accessSync(PHP_FPM, constants.X_OK)
        return undefined
      } catch {
        return `${PHP_FPM} not found (Debian package php-fpm; or set GATEHOUSE_BENCH_PHP_FPM)`
      }
    },
    async start(tmpDir): Promise<ServerHandle> {
      const conf = join(tmpDir, 'php-fpm.conf')
      writeFileSync(
        conf,
        [
          '[global]',
          `pid = ${join(tmpDir, 'php-fpm.pid')}`,
          `error_log = ${join(tmpDir, 'php-fpm.log')}`,
          'daemonize = no',
          '[www]',
          `listen = ${phpFpmSocket(tmpDir)}`,
          'listen.mode = 0666',
          'listen.backlog = 4096',
          'pm = static',
          `pm.max_children = ${opts.maxChildren}`,
          'pm.max_requests = 0',
          '',
        ].join('\n'),
        { mode: 0o644 },
      )
      // As root php-fpm refuses to start without -R.
      const args = [...(process.getuid?.() === 0 ? ['-R'] : []), '-F', '-y', conf]
      const handle = spawnServer(PHP_FPM, args)
      try {
        await waitForUnixSocket(phpFpmSocket(tmpDir), { server: handle, what: 'php-fpm' })
      } catch (err) {
        await handle.stop()
        throw err
      }
      return handle
    },
  }
}
