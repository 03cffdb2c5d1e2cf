import { statSync } from 'node:fs'
import { isAbsolute, resolve } from 'node:path'
import { z } from 'zod'
import type { SchemaEnv } from '../types.js'

/** A path that must exist at start as `kind`; relative paths resolve against the config's directory. */
function existingPath(env: SchemaEnv, kind: 'directory' | 'file') {
  return z
    .string()
    .min(1)
    .transform((value, ctx) => {
      const abs = isAbsolute(value) ? value : resolve(env.baseDir, value)
      let ok = false
      try {
        const st = statSync(abs)
        ok = kind === 'directory' ? st.isDirectory() : st.isFile()
      } catch {
        ok = false
      }
      if (!ok) {
        ctx.addIssue({ code: 'custom', message: `no such ${kind} (${abs})` })
        return z.NEVER
      }
      return abs
    })
}

/** A directory that must exist at start. */
export const existingDir = (env: SchemaEnv) => existingPath(env, 'directory')

/** A regular file that must exist at start. */
export const existingFile = (env: SchemaEnv) => existingPath(env, 'file')

/** A file path that need not exist yet (logs, sockets); resolved against the config's directory. */
export function filePath(env: SchemaEnv) {
  return z
    .string()
    .min(1)
    .transform((value) => (isAbsolute(value) ? value : resolve(env.baseDir, value)))
}
