/*
 * Where the Python side of the bridge lives and which interpreter runs it. The npm package
 * ships python/ (package.json "files"); workers get it on PYTHONPATH, nothing to install.
 */
import { existsSync } from 'node:fs'
import { fileURLToPath } from 'node:url'

/** python/ of the installed package. */
export const PYTHON_PACKAGE_DIR = fileURLToPath(new URL('../../../../python/', import.meta.url))

/** /usr/bin/python3 when it exists (Debian's, with its packages), else `python3` on PATH. */
export function defaultPython(): string {
  return existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3'
}
