/*
 * Static files. Written here rather than taken from `send`/`serve-static`/`sirv` because none of
 * them combines what the front server needs: precompressed .br/.gz siblings, a symlink policy
 * checked against the real root, and a small-file cache revalidated by stat (nginx's
 * open_file_cache) that keeps the hot path off the thread pool. The pieces that are
 * well-solved are libraries: MIME types (mime-types), Range parsing (range-parser),
 * conditional requests (fresh), Accept-Encoding negotiation (negotiator).
 */
import { createReadStream, realpathSync } from 'node:fs'
import { lstat, readdir, readFile, realpath, stat } from 'node:fs/promises'
import { join, sep } from 'node:path'
import { pipeline } from 'node:stream/promises'
import fresh from 'fresh'
import mime from 'mime-types'
import Negotiator from 'negotiator'
import parseRange from 'range-parser'
import { z } from 'zod'
import { existingDir } from '../../core/schema/paths.js'
import { strictObject } from '../../core/schema/strict.js'
import { duration, size } from '../../core/schema/units.js'
import { GatehouseError } from '../../core/errors.js'
import type { ActionDefinition, RequestContext } from '../../core/types.js'
import { sendStatus } from '../../core/respond.js'
import { missingOrThrow } from '../../core/fs-errors.js'

const staticSchema = (env: { baseDir: string }) =>
  strictObject({
    root: existingDir(env),
    index: z
      .array(
        z
          .string()
          .min(1)
          .regex(/^[^/]+$/, 'an index is a file name, not a path'),
      )
      .default(['index.html']),
    listing: z.boolean().default(false),
    precompressed: z.boolean().default(true),
    symlinks: z.enum(['inside_root', 'follow', 'refuse']).default('inside_root'),
    dotfiles: z.enum(['deny', 'allow']).default('deny'),
    cache_control: z.string().optional(),
    cache_ttl: duration.prefault(1),
    cache_max_file_bytes: size.prefault(65536),
    cache_max_bytes: size.prefault(32 * 1024 * 1024),
  })

export type StaticOptions = z.output<ReturnType<typeof staticSchema>>

interface FileInfo {
  kind: 'file' | 'dir'
  size: number
  mtimeMs: number
  etag: string
  lastModified: string
  /** File contents, when small enough for the cache. */
  body?: Buffer
  /** Content-Type by extension, computed once per cache entry. */
  contentType?: string
  /** Whether precompressed siblings exist, found once per cache entry (lives as long as it). */
  hasVariants?: boolean
}

interface CacheEntry {
  checkedAt: number
  info: FileInfo | null
}

/**
 * Path -> stat (and small bodies), revalidated at most once per `ttl` ms; LRU-bounded in
 * entries and bytes. A missing file is cached as null for the same ttl.
 */
class FileCache {
  private readonly entries = new Map<string, CacheEntry>()
  private bytes = 0

  constructor(
    private readonly options: StaticOptions,
    private readonly realRoot: string,
  ) {}

  /**
   * The cached answer while it is fresh, or undefined when a stat is due. Synchronous, so a
   * hit costs no promise: the hot path of a static server. Eviction is by insertion order
   * (an entry is re-inserted each time it is revalidated), which keeps hits free of writes.
   */
  peek(path: string): FileInfo | null | undefined {
    const cached = this.entries.get(path)
    if (cached && Date.now() - cached.checkedAt < this.options.cache_ttl) return cached.info
    return undefined
  }

  async lookup(path: string): Promise<FileInfo | null> {
    const now = Date.now()
    const cached = this.entries.get(path)
    if (cached && now - cached.checkedAt < this.options.cache_ttl) return cached.info
    const info = await this.load(path, cached?.info ?? null)
    if (this.options.cache_ttl > 0) this.store(path, { checkedAt: now, info })
    return info
  }

  private store(path: string, entry: CacheEntry): void {
    const old = this.entries.get(path)
    if (old) {
      this.bytes -= old.info?.body?.length ?? 0
      this.entries.delete(path)
    }
    this.entries.set(path, entry)
    this.bytes += entry.info?.body?.length ?? 0
    while (this.entries.size > 10_000 || this.bytes > this.options.cache_max_bytes) {
      const oldest = this.entries.keys().next()
      if (oldest.done) break
      this.bytes -= this.entries.get(oldest.value)?.info?.body?.length ?? 0
      this.entries.delete(oldest.value)
    }
  }

  private async load(path: string, previous: FileInfo | null): Promise<FileInfo | null> {
    let st: Awaited<ReturnType<typeof stat>>
    try {
      st = this.options.symlinks === 'follow' ? await stat(path) : await lstat(path)
      if (st.isSymbolicLink()) {
        if (this.options.symlinks === 'refuse') return null
        st = await stat(path)
      }
      if (this.options.symlinks !== 'follow' && !(await this.insideRoot(path))) return null
    } catch (err) {
      return missingOrThrow(err, path)
    }
    if (!st.isFile() && !st.isDirectory()) return null // sockets, FIFOs, devices are never served
    const mtimeMs = Math.floor(st.mtimeMs)
    const info: FileInfo = {
      kind: st.isDirectory() ? 'dir' : 'file',
      size: st.size,
      mtimeMs,
      etag: `"${mtimeMs.toString(16)}-${st.size.toString(16)}"`,
      lastModified: new Date(mtimeMs).toUTCString(),
    }
    if (info.kind === 'file' && st.size <= this.options.cache_max_file_bytes && this.options.cache_ttl > 0) {
      if (previous?.body && previous.mtimeMs === mtimeMs && previous.size === st.size) {
        info.body = previous.body
      } else {
        try {
          const body = await readFile(path)
          // The file changed between stat and read: serve it uncached this time.
          if (body.length === st.size) info.body = body
        } catch (err) {
          const code = (err as NodeJS.ErrnoException).code
          if (code === 'EACCES' || code === 'EPERM')
            throw new GatehouseError('GH_ERR_FORBIDDEN', path, { cause: err })
          return null
        }
      }
    }
    return info
  }

  /** Every symlink on the way must resolve inside the root (or symlinks are refused outright). */
  private async insideRoot(path: string): Promise<boolean> {
    const real = await realpath(path)
    // A directory looked up as `dir/` keeps its slash through join(); realpath drops it.
    const given = path.length > 1 && path.endsWith(sep) ? path.slice(0, -1) : path
    if (this.options.symlinks === 'refuse' && real !== given) return false
    return real === this.realRoot || real.startsWith(this.realRoot + sep)
  }
}

const HTML_ESCAPES: Record<string, string> = {
  '&': '&amp;',
  '<': '&lt;',
  '>': '&gt;',
  '"': '&quot;',
  "'": '&#39;',
}
const escapeHtml = (s: string) => s.replace(/[&<>"']/g, (c) => HTML_ESCAPES[c]!)

function contentTypeOf(path: string): string {
  return mime.contentType(path.slice(path.lastIndexOf('/') + 1)) || 'application/octet-stream'
}

const ENCODINGS = [
  { token: 'br', suffix: '.br' },
  { token: 'gzip', suffix: '.gz' },
] as const

export function createStaticHandler(options: StaticOptions) {
  const realRoot = realpathSync(options.root)
  const root = options.symlinks === 'follow' ? options.root : realRoot
  const cache = new FileCache(options, realRoot)

  async function handle(ctx: RequestContext): Promise<void> {
    const { res } = ctx
    // The router guarantees ctx.path starts with the route prefix on a segment boundary.
    const prefix = ctx.route.prefix.endsWith('/') ? ctx.route.prefix.slice(0, -1) : ctx.route.prefix
    // '' when the URL names the prefix itself: a directory, redirected to the slash form below.
    const rel = ctx.path.slice(prefix.length)
    if (options.dotfiles === 'deny' && /\/\.(?!well-known(?:\/|$))/.test(rel)) {
      sendStatus(res, 404, { head: ctx.method === 'HEAD' })
      return
    }
    const path = join(root, rel)
    const hit = cache.peek(path)
    let info = hit !== undefined ? hit : await cache.lookup(path)
    let filePath = path
    if (info?.kind === 'dir') {
      if (!rel.endsWith('/')) {
        // From the normalized path: a raw `//host/..` target would make a protocol-relative
        // Location, an open redirect to another host.
        const canonical = ctx.path.split('/').map(encodeURIComponent).join('/')
        const location = `${canonical}/${ctx.query ? `?${ctx.query}` : ''}`
        sendStatus(res, 301, { headers: { location }, head: ctx.method === 'HEAD' })
        return
      }
      const dir = path
      info = null
      for (const name of options.index) {
        const candidate = join(dir, name)
        const found = await cache.lookup(candidate)
        if (found?.kind === 'file') {
          info = found
          filePath = candidate
          break
        }
      }
      if (!info) {
        if (options.listing) await sendListing(ctx, dir, rel)
        else sendStatus(res, 403, { head: ctx.method === 'HEAD' })
        return
      }
    }
    if (info?.kind !== 'file') {
      sendStatus(res, 404, { head: ctx.method === 'HEAD' })
      return
    }
    await sendFile(ctx, filePath, info)
  }

  async function chooseEncoding(
    ctx: RequestContext,
    filePath: string,
  ): Promise<{ token: string; path: string; info: FileInfo } | null> {
    const accept = ctx.req.headers['accept-encoding']
    if (!options.precompressed || !accept || ctx.req.headers.range) return null
    const allowed = new Negotiator(ctx.req).encodings(['br', 'gzip', 'identity'])
    for (const token of allowed) {
      if (token === 'identity') return null
      const enc = ENCODINGS.find((e) => e.token === token)
      if (!enc) continue
      const info = await cache.lookup(filePath + enc.suffix)
      if (info?.kind === 'file') return { token: enc.token, path: filePath + enc.suffix, info }
    }
    return null
  }

  async function hasVariants(filePath: string, identity: FileInfo): Promise<boolean> {
    if (identity.hasVariants !== undefined) return identity.hasVariants
    if (!options.precompressed) return (identity.hasVariants = false)
    let found = false
    for (const enc of ENCODINGS)
      if ((await cache.lookup(filePath + enc.suffix))?.kind === 'file') found = true
    identity.hasVariants = found
    return found
  }

  async function sendFile(ctx: RequestContext, filePath: string, identity: FileInfo): Promise<void> {
    const { req, res } = ctx
    const encoded = req.headers['accept-encoding'] === undefined ? null : await chooseEncoding(ctx, filePath)
    const info = encoded?.info ?? identity
    // A sibling's validator is its own (a rebuilt .br alone must change the ETag).
    const etag = encoded ? `${encoded.info.etag.slice(0, -1)}-${encoded.token}"` : identity.etag
    identity.contentType ??= contentTypeOf(filePath)
    const headers: Record<string, string | number> = {
      'content-type': identity.contentType,
      etag,
      'last-modified': identity.lastModified,
      'accept-ranges': 'bytes',
    }
    if (options.cache_control) headers['cache-control'] = options.cache_control
    if (encoded) headers['content-encoding'] = encoded.token
    if (encoded || (identity.hasVariants ?? (await hasVariants(filePath, identity))))
      headers.vary = 'Accept-Encoding'

    // RFC 9110 13.2.2: If-Match / If-Unmodified-Since first, then If-None-Match / If-Modified-Since.
    const ifMatch = req.headers['if-match']
    if (ifMatch !== undefined && ifMatch.trim() !== '*' && !etagListHas(ifMatch, etag, false)) {
      sendStatus(res, 412, { head: ctx.method === 'HEAD' })
      return
    }
    const ius = req.headers['if-unmodified-since']
    if (ifMatch === undefined && ius !== undefined) {
      const t = Date.parse(ius)
      if (!Number.isNaN(t) && Math.floor(identity.mtimeMs / 1000) > Math.floor(t / 1000)) {
        sendStatus(res, 412, { head: ctx.method === 'HEAD' })
        return
      }
    }
    const conditional =
      req.headers['if-none-match'] !== undefined || req.headers['if-modified-since'] !== undefined
    if (conditional && fresh(req.headers, { etag, 'last-modified': identity.lastModified })) {
      delete headers['content-type']
      res.writeHead(304, headers)
      res.end()
      return
    }

    let start = 0
    let end = info.size - 1
    let status = 200
    const rangeHeader = req.headers.range
    if (
      rangeHeader !== undefined &&
      ctx.method === 'GET' &&
      !encoded &&
      rangeApplies(headerValue(req.headers['if-range']), etag, identity)
    ) {
      const ranges = parseRange(info.size, rangeHeader, { combine: true })
      if (ranges === -1) {
        sendStatus(res, 416, { headers: { 'content-range': `bytes */${info.size}` } })
        return
      }
      // -2 (malformed) and several disjoint ranges: RFC 9110 14.2 lets us ignore Range and send 200.
      if (ranges !== -2 && ranges.length === 1 && ranges.type === 'bytes') {
        start = ranges[0]!.start
        end = ranges[0]!.end
        status = 206
        headers['content-range'] = `bytes ${start}-${end}/${info.size}`
      }
    }
    const length = info.size === 0 ? 0 : end - start + 1
    headers['content-length'] = length
    res.writeHead(status, headers)
    if (ctx.method === 'HEAD' || length === 0) {
      res.end()
      return
    }
    if (info.body) {
      res.end(status === 206 ? info.body.subarray(start, end + 1) : info.body)
      return
    }
    await pipeline(createReadStream(encoded?.path ?? filePath, { start, end, highWaterMark: 64 * 1024 }), res)
  }

  async function sendListing(ctx: RequestContext, dir: string, rel: string): Promise<void> {
    const entries = await readdir(dir, { withFileTypes: true })
    const rows = entries
      .filter((e) => options.dotfiles === 'allow' || !e.name.startsWith('.'))
      .map((e) => (e.isDirectory() ? `${e.name}/` : e.name))
      .sort()
      .map(
        (name) =>
          `<li><a href="${escapeHtml(encodeURIComponent(name).replace(/%2F$/, '/'))}">${escapeHtml(name)}</a></li>`,
      )
    const title = escapeHtml(`Index of ${rel}`)
    const html = `<!doctype html>\n<html><head><meta charset="utf-8"><title>${title}</title></head>\n<body><h1>${title}</h1>\n<ul>\n${rel === '/' ? '' : '<li><a href="../">../</a></li>\n'}${rows.join('\n')}\n</ul></body></html>\n`
    sendStatus(ctx.res, 200, {
      body: html,
      headers: { 'content-type': 'text/html; charset=utf-8' },
      head: ctx.method === 'HEAD',
    })
  }

  return { handle }
}

const headerValue = (v: string | string[] | undefined) => (Array.isArray(v) ? v.join(', ') : v)

/** If-Range (RFC 9110 13.1.5): a strong ETag that matches, or an HTTP date equal to Last-Modified. */
function rangeApplies(ifRange: string | undefined, etag: string, info: FileInfo): boolean {
  if (ifRange === undefined) return true
  const v = ifRange.trim()
  if (v.startsWith('"') || v.startsWith('W/')) return v === etag
  const t = Date.parse(v)
  return !Number.isNaN(t) && Math.floor(t / 1000) === Math.floor(info.mtimeMs / 1000)
}

function etagListHas(list: string, etag: string, weak: boolean): boolean {
  const strip = (t: string) => (weak && t.startsWith('W/') ? t.slice(2) : t)
  return list.split(',').some((t) => {
    const tag = t.trim()
    if (!weak && tag.startsWith('W/')) return false
    return strip(tag) === strip(etag)
  })
}

export const staticAction: ActionDefinition<StaticOptions> = {
  name: 'static',
  summary: 'serve files from a directory (ETag, Range, precompressed siblings, no escape from the root)',
  defaultMethods: ['GET', 'HEAD'],
  schema: staticSchema,
  create: (options) => createStaticHandler(options),
}
