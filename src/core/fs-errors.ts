/*
 * What a failed look-up of a file a request names means for that request, the same for
 * every gateway that maps URLs to files (static, CGI).
 */
import { GatehouseError } from './errors.js'

/** "No such file", for a path built from a URL (which can be longer than a file name may be). */
const MISSING = new Set(['ENOENT', 'ENOTDIR', 'ELOOP', 'ENAMETOOLONG'])

/**
 * For a stat() (or the like) of `path` that failed with `err`: null when there is no such
 * file (a 404), GH_ERR_FORBIDDEN (a 403) when the server may not look; anything else is
 * thrown as it is.
 */
export function missingOrThrow(err: unknown, path: string): null {
  const code = (err as NodeJS.ErrnoException | undefined)?.code
  if (code !== undefined && MISSING.has(code)) return null
  if (code === 'EACCES' || code === 'EPERM')
    throw new GatehouseError('GH_ERR_FORBIDDEN', path, { cause: err })
  throw err
}
