import { readFileSync } from 'node:fs'
import { dirname, extname, resolve } from 'node:path'
import { parse as parseToml, TomlError } from 'smol-toml'
import type { z } from 'zod'
import { GatehouseError } from '../core/errors.js'
import { formatIssues } from '../core/schema/issues.js'

/**
 * Parse a config object with `schema` (configSchema(env, gateways)). Every problem is
 * reported at once in GatehouseError.problems (GH_ERR_CONFIG); the result is frozen.
 */
export function parseConfig<S extends z.ZodType>(schema: S, input: unknown): z.output<S> {
  const result = schema.safeParse(input)
  if (!result.success) {
    const problems = formatIssues(result.error.issues)
    throw new GatehouseError('GH_ERR_CONFIG', problems.join('; '), { problems })
  }
  return deepFreeze(result.data)
}

function deepFreeze<T>(value: T): T {
  if (value && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value)
    for (const v of Object.values(value)) deepFreeze(v)
  }
  return value
}

/** Parse a TOML (or, by extension, JSON) config file; syntax errors name the line. */
export function readConfigFile(file: string): { input: Record<string, unknown>; baseDir: string } {
  const abs = resolve(file)
  let text: string
  try {
    text = readFileSync(abs, 'utf8')
  } catch (err) {
    throw new GatehouseError('GH_ERR_CONFIG', `cannot read ${abs}`, {
      cause: err,
      problems: [
        `${file}: ${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (err as Error).message}`,
      ],
    })
  }
  // An empty file is refused rather than read as "every default" (a server on
  // 127.0.0.1:8080 with no routes): a reload that catches the file truncated by an editor
  // or a deploy script writing it in place would otherwise drop every listener and route.
  if (text.trim() === '') {
    const message = `${file}: the file is empty (being written?); nothing was changed`
    throw new GatehouseError('GH_ERR_CONFIG', message, { problems: [message] })
  }
  let input: unknown
  try {
    input = extname(abs).toLowerCase() === '.json' ? JSON.parse(text) : parseToml(text)
  } catch (err) {
    const where = err instanceof TomlError ? `${file}:${err.line}:${err.column}` : file
    const message = err instanceof TomlError ? err.message.split('\n')[0] : (err as Error).message
    throw new GatehouseError('GH_ERR_CONFIG', `${where}: ${message}`, {
      cause: err,
      problems: [`${where}: ${message}`],
    })
  }
  if (!input || typeof input !== 'object' || Array.isArray(input)) {
    throw new GatehouseError('GH_ERR_CONFIG', `${file}: top level must be a table`, {
      problems: [`${file}: top level must be a table`],
    })
  }
  return { input: input as Record<string, unknown>, baseDir: dirname(abs) }
}
