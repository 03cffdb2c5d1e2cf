/*
 * File offload from an app's response (issue 17): `X-Sendfile` (Apache mod_xsendfile,
 * lighttpd's `X-LIGHTTPD-send-file`) names a file inside the route's `sendfile.root`, and
 * `X-Accel-Redirect` (nginx) names a URI that an `internal` route serves. Gatehouse then
 * drops the app's body (taking it as fast as it comes, so the worker, a PHP or WSGI process,
 * is free at once) and serves the file itself with the static gateway's code: Range,
 * ETag, Last-Modified, conditional requests, precompressed siblings.
 *
 * It works on the ServerResponse before the route's handler runs, as http/encode.ts does,
 * so every gateway (CGI, FastCGI/PHP, uwsgi, WSGI, ASGI) is covered without its own code:
 * the head the app writes is looked at; without either header it goes out untouched. With
 * one, the gateway's writes are dropped, and when it ends its response the file is served
 * on the same response (through the coder, when the route has `encode`).
 *
 * What the file's response keeps of the app's head: Set-Cookie, Content-Disposition,
 * Cache-Control and Expires (what nginx keeps on X-Accel-Redirect). The status, Content-Type,
 * ETag, Last-Modified and length are the file's (200, 206, 304, 412 or 416), as in nginx.
 */
import type { IncomingMessage, OutgoingHttpHeader, ServerResponse } from 'node:http'
import { stat } from 'node:fs/promises'
import { isAbsolute, join, relative, resolve, sep } from 'node:path'
import type { Logger } from 'pino'
import { sendError, sendStatus } from '../core/respond.js'

/** What a route with `sendfile` offers its app. */
export interface OffloadOptions {
  /** X-Sendfile: files under this directory (absolute), served by `serveFile`. */
  root?: string
  /** Serve the file at `rel` (a path under root, with '/' separators and a leading '/'). */
  serveFile?(rel: string): void
  /**
   * X-Accel-Redirect: serve `uri` from an internal route; false when no internal route
   * takes it. Absent: X-Accel-Redirect is not honoured on this route.
   */
  redirect?(uri: string): boolean
}

/** The app's header fields the file's response keeps. */
const KEPT = ['set-cookie', 'content-disposition', 'cache-control', 'expires']

type Fields = Map<string, OutgoingHttpHeader>

/** The head as it would go out: fields set earlier, then writeHead's argument over them. */
function headOf(res: ServerResponse, headers: unknown): Fields {
  const fields: Fields = new Map(Object.entries(res.getHeaders()) as [string, OutgoingHttpHeader][])
  if (Array.isArray(headers)) {
    const given = new Map<string, string[]>()
    for (let i = 0; i < headers.length; i += 2) {
      const name = String(headers[i]).toLowerCase()
      given.set(name, [...(given.get(name) ?? []), String(headers[i + 1])])
    }
    for (const [name, values] of given) fields.set(name, values.length === 1 ? values[0]! : values)
  } else if (headers && typeof headers === 'object') {
    for (const [name, value] of Object.entries(headers as Record<string, OutgoingHttpHeader | undefined>))
      if (value !== undefined) fields.set(name.toLowerCase(), value)
  }
  return fields
}

const first = (v: OutgoingHttpHeader | undefined): string | undefined =>
  v === undefined ? undefined : Array.isArray(v) ? v[0] : String(v)

/**
 * Watch the head `res` is given; serve the file an X-Sendfile or X-Accel-Redirect in it
 * names. Installed before the handler writes anything.
 */
export function offloadResponse(
  req: IncomingMessage,
  res: ServerResponse,
  options: OffloadOptions,
  log: Logger,
): void {
  const saved = { writeHead: res.writeHead, write: res.write, end: res.end }
  const restore = () => {
    res.writeHead = saved.writeHead
    res.write = saved.write
    res.end = saved.end
  }

  /** The file to serve instead of the app's body, or null to let the head out. */
  const offload = (fields: Fields): (() => void) | null => {
    const sendfile = options.root
      ? (first(fields.get('x-sendfile')) ?? first(fields.get('x-lighttpd-send-file')))
      : undefined
    const accel = options.redirect ? first(fields.get('x-accel-redirect')) : undefined
    if (sendfile === undefined && accel === undefined) return null
    return () => {
      for (const name of res.getHeaderNames()) res.removeHeader(name)
      for (const name of KEPT) {
        const value = fields.get(name)
        if (value !== undefined) res.setHeader(name, value)
      }
      if (sendfile !== undefined) {
        // A relative path is under the root; an absolute one must be.
        const root = options.root!
        const rel = relative(root, resolve(root, sendfile.trim()))
        if (rel === '' || rel === '..' || rel.startsWith(`..${sep}`) || isAbsolute(rel)) {
          log.warn(
            { code: 'GH_ERR_SENDFILE_PATH', path: sendfile, root, uri: req.url },
            'X-Sendfile names a file outside sendfile.root: 403',
          )
          sendError(res, 'GH_ERR_SENDFILE_PATH', { head: req.method === 'HEAD' })
          return
        }
        // A directory is not a file to send (the static code would redirect to its slash form).
        stat(join(root, rel)).then(
          (st) => {
            if (st.isDirectory()) sendStatus(res, 404, { head: req.method === 'HEAD' })
            else options.serveFile!(`/${rel.split(sep).join('/')}`)
          },
          () => options.serveFile!(`/${rel.split(sep).join('/')}`),
        )
        return
      }
      if (!options.redirect!(accel!.trim())) {
        log.warn(
          { code: 'GH_ERR_ACCEL_REDIRECT', target: accel, uri: req.url },
          'X-Accel-Redirect names a URI no internal route serves: 404',
        )
        sendError(res, 'GH_ERR_ACCEL_REDIRECT', { head: req.method === 'HEAD' })
      }
    }
  }

  res.writeHead = function (this: ServerResponse, status: number, ...rest: unknown[]) {
    const head = saved.writeHead as (this: ServerResponse, ...a: unknown[]) => ServerResponse
    if (status < 200) return head.call(this, status, ...rest)
    const headers = typeof rest[0] === 'string' ? rest[1] : rest[0]
    const serve = offload(headOf(res, headers))
    restore()
    if (!serve) return head.call(this, status, ...rest)
    // The app's body is taken and dropped; its end starts the file.
    let ended = false
    res.write = function (_chunk: unknown, encoding?: unknown, cb?: unknown) {
      const done = typeof encoding === 'function' ? encoding : cb
      if (typeof done === 'function') process.nextTick(done as () => void)
      return true
    } as ServerResponse['write']
    res.end = function (this: ServerResponse, chunk?: unknown, encoding?: unknown, cb?: unknown) {
      if (ended) return this
      ended = true
      restore()
      const done = [chunk, encoding, cb].find((a) => typeof a === 'function') as (() => void) | undefined
      if (done) this.once('finish', done)
      serve()
      return this
    } as ServerResponse['end']
    return this
  } as ServerResponse['writeHead']

  // A body written before any head: node makes the head from the fields set so far.
  const implicit = (method: 'write' | 'end') =>
    function (this: ServerResponse, ...args: unknown[]) {
      if (this.headersSent || offload(headOf(res, undefined)) === null) {
        restore()
        return (saved[method] as (...a: unknown[]) => unknown).apply(this, args)
      }
      this.writeHead(this.statusCode)
      return (this[method] as (...a: unknown[]) => unknown)(...args)
    }
  res.write = implicit('write') as ServerResponse['write']
  res.end = implicit('end') as ServerResponse['end']
}
