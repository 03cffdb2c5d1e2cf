/*
 * Which script a URL path names, and what it is told it was called: SCRIPT_NAME and
 * PATH_INFO (RFC 3875 4.1.13, 4.1.5), split at the first path segment that is a file. The
 * root is never left (symlinks included), hidden files are never scripts, and an
 * interpreter is chosen by the file's extension.
 */
import { constants, realpathSync } from 'node:fs'
import { access, realpath, stat } from 'node:fs/promises'
import { basename, extname, join, sep } from 'node:path'
import type { Logger } from 'pino'
import { missingOrThrow } from '../../core/fs-errors.js'

export interface ScriptTarget {
  filename: string
  scriptName: string
  pathInfo: string
  argv: string[]
  /** `nph-` scripts write the whole HTTP response themselves. */
  nph: boolean
}

export type Resolution =
  { kind: 'script'; target: ScriptTarget } | { kind: 'respond'; status: number; location?: string }

export interface ResolverOptions {
  /** A directory of scripts; or */
  root?: string | undefined
  /** one program for the whole prefix. */
  script?: string | undefined
  /** Scripts to run when the URL names a directory. */
  index: readonly string[]
  /** Extension (with or without its dot) -> interpreter command. */
  interpreters: Record<string, string[]>
}

export class ScriptResolver {
  private readonly interpreters = new Map<string, string[]>()
  private readonly realRoot: string | undefined

  constructor(
    private readonly options: ResolverOptions,
    private readonly log: Logger,
  ) {
    for (const [ext, command] of Object.entries(options.interpreters)) {
      this.interpreters.set((ext.startsWith('.') ? ext : `.${ext}`).toLowerCase(), command)
    }
    this.realRoot = options.root === undefined ? undefined : realpathSync(options.root)
  }

  /**
   * URL path -> script, split into SCRIPT_NAME and PATH_INFO at the first segment that is a
   * file. `prefix`: the route's, without a trailing slash.
   */
  async resolve(
    prefix: string,
    request: { path: string; rawPath: string; query: string },
  ): Promise<Resolution> {
    const { path } = request
    const rel = path.startsWith(prefix) ? path.slice(prefix.length) : path
    if (this.options.script !== undefined) {
      return { kind: 'script', target: this.target(this.options.script, prefix, rel) }
    }
    const root = this.options.root!
    let dir = root
    let scriptName = prefix
    let offset = 0 // rel[0..offset) has been consumed as directories
    for (;;) {
      if (offset >= rel.length || rel === '/' || offset === rel.length - 1) {
        // The URL names a directory.
        if (!rel.endsWith('/')) {
          const location = `${request.rawPath}/${request.query ? `?${request.query}` : ''}`
          return this.options.index.length > 0
            ? { kind: 'respond', status: 301, location }
            : { kind: 'respond', status: 403 }
        }
        for (const name of this.options.index) {
          const candidate = join(dir, name)
          const st = await statOrNull(candidate)
          if (st?.isFile()) return this.checked(candidate, `${scriptName}/${name}`, '')
        }
        return { kind: 'respond', status: 403 }
      }
      const next = rel.indexOf('/', offset + 1)
      const end = next === -1 ? rel.length : next
      const segment = rel.slice(offset + 1, end)
      // Hidden files and directories (.git, .htaccess) are never scripts.
      if (segment.startsWith('.')) return { kind: 'respond', status: 404 }
      const candidate = join(dir, segment)
      const st = await statOrNull(candidate)
      if (!st) return { kind: 'respond', status: 404 }
      if (st.isFile()) return this.checked(candidate, `${scriptName}/${segment}`, rel.slice(end))
      if (!st.isDirectory()) return { kind: 'respond', status: 404 }
      dir = candidate
      scriptName = `${scriptName}/${segment}`
      offset = end
    }
  }

  /** A found file: inside the root (symlinks included), and runnable. */
  private async checked(filename: string, scriptName: string, pathInfo: string): Promise<Resolution> {
    let real: string
    try {
      real = await realpath(filename)
    } catch {
      return { kind: 'respond', status: 404 }
    }
    const root = this.realRoot!
    if (real !== root && !real.startsWith(root + sep)) return { kind: 'respond', status: 404 }
    const target = this.target(filename, scriptName, pathInfo)
    if (target.argv.length === 1) {
      try {
        await access(filename, constants.X_OK)
      } catch {
        this.log.warn({ script: filename }, 'cgi: not executable and no interpreter for its extension')
        return { kind: 'respond', status: 403 }
      }
    }
    return { kind: 'script', target }
  }

  private target(filename: string, scriptName: string, pathInfo: string): ScriptTarget {
    const interpreter = this.interpreters.get(extname(filename).toLowerCase())
    return {
      filename,
      scriptName,
      pathInfo,
      // Never the query string: RFC 3875 4.4's command-line arguments are how php-cgi got
      // `?-s` and `?-d ...` (CVE-2012-1823, CVE-2024-4577).
      argv: interpreter ? [...interpreter, filename] : [filename],
      nph: basename(filename).startsWith('nph-'),
    }
  }
}

async function statOrNull(path: string) {
  try {
    return await stat(path)
  } catch (err) {
    return missingOrThrow(err, path)
  }
}
