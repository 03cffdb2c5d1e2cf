/*
 * Where the Python side of the bridge lives and which interpreter runs it. The npm package
 * ships python/ (package.json "files"); workers get it on PYTHONPATH, nothing to install.
 */
import { execFile } from 'node:child_process'
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import type { Logger } from 'pino'
import { fileURLToPath } from 'node:url'

/** python/ of the installed package. */
export const PYTHON_PACKAGE_DIR = fileURLToPath(new URL('../../../../python/', import.meta.url))

/**
 * The interpreter when none is named: the active virtualenv's ($VIRTUAL_ENV/bin/python, as
 * `source .venv/bin/activate` sets it, when it exists), else /usr/bin/python3 when it exists
 * (Debian's, with its packages), else `python3` on PATH.
 */
export function defaultPython(): string {
  const venv = process.env.VIRTUAL_ENV
  if (venv) {
    const python = join(venv, 'bin', 'python')
    if (existsSync(python)) return python
  }
  return existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3'
}

/**
 * Log which interpreter the workers run, and its version (asked of the interpreter itself,
 * in the background): `wsgi workers run /srv/venv/bin/python (Python 3.11.2)`.
 */
export function logInterpreter(
  log: Logger,
  kind: string,
  python: string,
  env: Record<string, string>,
  cwd: string,
): void {
  execFile(
    python,
    ['-c', 'import sys; print(sys.executable); print(sys.version.split()[0])'],
    { env, cwd, timeout: 30_000 },
    (err, stdout) => {
      if (err) return // the pool reports an interpreter that cannot run
      const [path, version] = stdout.trim().split('\n')
      log.info(
        { pool: kind, python: path || python, python_version: version },
        `${kind} workers run ${path || python} (Python ${version})`,
      )
    },
  )
}
