import { statSync } from 'node:fs'
import { isAbsolute, resolve } from 'node:path'
import { z } from 'zod'
import type { SchemaEnv } from '../types.js'

/** A directory that must exist at start; relative paths resolve against the config's directory. */
export function existingDir(env: SchemaEnv) {
  return z
    .string()
    .min(1)
    .transform((value, ctx) => {
      const abs = isAbsolute(value) ? value : resolve(env.baseDir, value)
      let ok = false
      try {
        ok = statSync(abs).isDirectory()
      } catch {
        ok = false
      }
      if (!ok) {
        ctx.addIssue({ code: 'custom', message: `no such directory (${abs})` })
        return z.NEVER
      }
      return abs
    })
}

/** A file path that need not exist yet (logs, sockets); resolved against the config's directory. */
export function filePath(env: SchemaEnv) {
  return z
    .string()
    .min(1)
    .transform((value) => (isAbsolute(value) ? value : resolve(env.baseDir, value)))
}

/** A regular file that must exist at start; relative paths resolve against the config's directory. */
export function existingFile(env: SchemaEnv) {
  return z
    .string()
    .min(1)
    .transform((value, ctx) => {
      const abs = isAbsolute(value) ? value : resolve(env.baseDir, value)
      let ok = false
      try {
        ok = statSync(abs).isFile()
      } catch {
        ok = false
      }
      if (!ok) {
        ctx.addIssue({ code: 'custom', message: `no such file (${abs})` })
        return z.NEVER
      }
      return abs
    })
}
