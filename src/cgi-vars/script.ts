/*
 * The CGI meta-variables of a request as the gateways send them (CGI's environment,
 * FastCGI's PARAMS): cgi-vars/meta.ts fed from a RequestContext.
 */
import { readFileSync } from 'node:fs'
import { buildCgiMeta } from './meta.js'
import type { TLSSocket } from 'node:tls'
import type { RequestContext } from '../core/types.js'

/** SERVER_SOFTWARE: `Gatehouse/<version>`. */
export const SERVER_SOFTWARE = (() => {
  try {
    const pkg = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as {
      version?: string
    }
    return `Gatehouse/${pkg.version ?? '0'}`
  } catch {
    return 'Gatehouse'
  }
})()

/** Where the request landed: what the script is called and where it lives. */
export interface ScriptLocation {
  /** URL path of the script, decoded ('' when the script owns the route's root). */
  scriptName: string
  /** Decoded rest of the path after scriptName ('' when none). */
  pathInfo: string
  /** The script's file ('' when the application does not need one). */
  scriptFilename: string
  /** DOCUMENT_ROOT, and the base of PATH_TRANSLATED ('' for none). */
  documentRoot: string
}

/**
 * The TLS connection's facts, under Apache mod_ssl's names (StdEnvVars), which PHP and WSGI
 * apps read: SSL_PROTOCOL (`TLSv1.3`), SSL_CIPHER (OpenSSL's name of the suite), SSL_TLS_SNI
 * (the name the client asked for, when it sent one). Only for a connection that is TLS
 * itself, not for one a proxy says was (X-Forwarded-Proto).
 */
export function addTlsMeta(meta: Record<string, string>, socket: TLSSocket): void {
  const protocol = socket.getProtocol()
  if (protocol) meta.SSL_PROTOCOL = protocol
  const cipher = socket.getCipher()
  if (cipher) meta.SSL_CIPHER = cipher.name
  const sni = (socket as TLSSocket & { servername?: string | false }).servername
  if (sni) meta.SSL_TLS_SNI = sni
}

/** The request's TLS socket, when the connection itself is TLS. */
export function tlsSocket(ctx: RequestContext): TLSSocket | undefined {
  const socket = ctx.req.socket as Partial<TLSSocket> | null
  return socket?.encrypted ? (socket as TLSSocket) : undefined
}

export function requestMeta(
  ctx: RequestContext,
  where: ScriptLocation,
  options: {
    contentLength: number | undefined
    passAuthorization: boolean
    /** See CgiMetaInput.applicationOnly (WSGI's environ). */
    applicationOnly?: boolean
    /** The request as dispatched, when it is not ctx's own (a CGI local redirect re-dispatches as GET). */
    request?: { method: string; rawPath: string; query: string; rawHeaders: readonly string[] }
  },
): Record<string, string> {
  const request = options.request ?? ctx.req
  const meta = buildCgiMeta({
    method: options.request?.method ?? ctx.method,
    rawPath: options.request?.rawPath ?? ctx.rawPath,
    query: options.request?.query ?? ctx.query,
    scriptName: where.scriptName,
    pathInfo: where.pathInfo,
    scriptFilename: where.scriptFilename,
    documentRoot: where.documentRoot,
    httpVersion: ctx.req.httpVersion,
    rawHeaders: request.rawHeaders,
    contentLength: options.contentLength,
    serverName: ctx.host,
    serverPort: ctx.port,
    serverSoftware: SERVER_SOFTWARE,
    remoteAddress: ctx.conn.remoteAddress,
    remotePort: ctx.conn.remotePort,
    localAddress: ctx.conn.localAddress,
    scheme: ctx.scheme,
    passAuthorization: options.passAuthorization,
    applicationOnly: options.applicationOnly,
  })
  const tls = tlsSocket(ctx)
  if (tls) addTlsMeta(meta, tls)
  if (options.applicationOnly) return meta
  if (where.scriptFilename === '') delete meta.SCRIPT_FILENAME
  if (where.documentRoot === '') {
    delete meta.DOCUMENT_ROOT
    delete meta.PATH_TRANSLATED
  }
  return meta
}
