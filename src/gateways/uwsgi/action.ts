/**
 * The `uwsgi` action: pass the request to a uwsgi server (uWSGI, or anything speaking the
 * protocol), like nginx's `uwsgi_pass` with `include uwsgi_params`. The reply is relayed as
 * it arrives, with backpressure both ways; hop-by-hop headers are dropped.
 */
import { upstreamNote } from '../../core/access-format.js'
import { z } from 'zod'
import { strictObject } from '../../core/schema/strict.js'
import { duration } from '../../core/schema/units.js'
import { bufferingShape, responseBuffering } from '../../core/schema/buffering.js'
import type { BodyFraming } from './http-response.js'
import { buildUwsgiVars } from './vars.js'
import { addTlsMeta, tlsSocket } from '../../cgi-vars/script.js'
import {
  bodyLength,
  bodySource,
  immediateBody,
  readRequestBody,
  type RequestBody,
  releaseBody,
} from '../../core/request-body.js'
import type { ActionDefinition, Handler, RequestContext, SchemaEnv } from '../../core/types.js'
import { cancelOnClientClose } from '../../core/cancel.js'
import { relayResponse } from '../../core/response-relay.js'
import { refuse, relayEarlyHints } from '../../core/respond.js'
import { HOP_BY_HOP } from '../../core/http-headers.js'
import { type UwsgiAddress, uwsgiCall, type UwsgiResponse } from './client.js'
import type { Logger } from 'pino'
import { resolveUpstreamAddress } from '../../core/address.js'
import { GatehouseError } from '../../core/errors.js'
import {
  isGroupRef,
  isIdempotent,
  releaseGroup,
  takeGroup,
  tryUpstreams,
  type UpstreamGroup,
  type UpstreamLease,
  upstreamTargetShape,
  withUpstreamAlias,
} from '../../core/upstream/index.js'
import { uwsgiProbe } from './health.js'

const uwsgiSchema = (env: SchemaEnv) =>
  withUpstreamAlias('pass', uwsgiShape(env), true).transform((o) => {
    if (typeof o.pass !== 'string') return o
    // One server, parsed as it always was: { path } or { host, port }.
    const addr = resolveUpstreamAddress(o.pass)
    return { ...o, pass: 'path' in addr ? { path: addr.path } : { host: addr.host, port: addr.port } }
  })

const uwsgiShape = (env: SchemaEnv) =>
  strictObject({
    /**
     * `unix:/path` (relative paths resolve against the config file), `host:port`, `[v6]:port`;
     * or a list of them, or the name of an `[upstreams.NAME]` group (`upstream` is the same key).
     */
    ...upstreamTargetShape(env, 'pass'),
    connect_timeout: duration.prefault(5),
    timeout: duration.prefault(60),
    modifier1: z.number().int().min(0).max(255).default(0),
    modifier2: z.number().int().min(0).max(255).default(0),
    /** Extra vars (`uwsgi_param`), sent after the built-in ones and replacing any of the same name. */
    params: z
      .record(z.string().regex(/^[\x21-\x7e]+$/, 'a var name is printable ASCII without spaces'), z.string())
      .default({}),
    document_root: z.string().default(''),
    /** SERVER_NAME; default: the request's host. */
    server_name: z.string().min(1).optional(),
    /** Request and response buffering (docs/reliability.md): on by default, as nginx's uwsgi_buffering. */
    ...bufferingShape,
  })

export type UwsgiOptions = z.output<ReturnType<typeof uwsgiSchema>>

/** The reply's headers for our client: hop-by-hop ones dropped, Content-Length only when it frames the body. */
export function relayHeaders(raw: readonly string[], framing: BodyFraming): string[] {
  const listed = new Set<string>()
  for (let i = 0; i + 1 < raw.length; i += 2) {
    if (raw[i]!.toLowerCase() !== 'connection') continue
    for (const token of raw[i + 1]!.split(',')) listed.add(token.trim().toLowerCase())
  }
  const out: string[] = []
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const lower = raw[i]!.toLowerCase()
    if (HOP_BY_HOP.has(lower) || listed.has(lower)) continue
    if (lower === 'content-length' && framing !== 'length' && framing !== 'none') continue
    out.push(raw[i]!, raw[i + 1]!)
  }
  return out
}

/** mod_ssl's SSL_* vars of a request that came over TLS (docs/http-front.md#tls), as `tls`. */
function tlsVars(ctx: RequestContext): { tls?: Record<string, string> } {
  const socket = tlsSocket(ctx)
  if (!socket) return {}
  const tls: Record<string, string> = {}
  addTlsMeta(tls, socket)
  return { tls }
}

const ABSOLUTE_FORM = /^https?:\/\/([^/?#]+)/i

export function createUwsgiHandler(options: UwsgiOptions, log?: Logger): Handler {
  const target = options.pass
  let group: UpstreamGroup | undefined
  let address: UwsgiAddress = ''
  if (isGroupRef(target)) {
    if (!target.spec)
      throw new GatehouseError(
        'GH_ERR_CONFIG',
        `upstream group ${JSON.stringify(target.name)} is named outside a config that defines it`,
      )
    group = takeGroup(
      target.spec,
      target.spec.health ? uwsgiProbe(target.spec.health, options) : undefined,
      log,
    )
  } else address = target
  const params = Object.entries(options.params).map(([k, v]) => [k, Buffer.from(v, 'utf8')] as const)
  const tags = { upstream: group ? `upstream:${group.name}` : resolveUpstreamAddress(address).text }
  const buffering = responseBuffering(options, 'gatehouse-uwsgi-')
  const bufferRequest = options.request_buffering

  async function handle(ctx: RequestContext): Promise<void> {
    const { req, res } = ctx
    const declared = req.headers['content-length']
    if (declared !== undefined && Number(declared) > ctx.maxBodyBytes) {
      refuse(res, 'GH_ERR_BODY_TOO_LARGE', ctx.log)
      return
    }
    let requestBody: RequestBody
    try {
      // uwsgi has no body framing: a chunked body is read first to learn its length, and
      // with request_buffering every body is, before the upstream is called. Otherwise the
      // body is known at once, without a turn of the event loop.
      requestBody =
        immediateBody(req, bufferRequest) ??
        (await readRequestBody(req, { limit: ctx.maxBodyBytes, buffer: bufferRequest }))
    } catch (err) {
      // The client went away in the middle of its body: nobody to answer.
      if (req.destroyed) return
      throw err
    }
    const contentLength = bodyLength(requestBody)
    const authority = ABSOLUTE_FORM.exec(req.url ?? '')?.[1]
    const vars = buildUwsgiVars({
      method: ctx.method,
      rawPath: ctx.rawPath,
      query: ctx.query,
      path: ctx.path,
      httpVersion: req.httpVersion,
      rawHeaders: req.rawHeaders,
      ...(authority !== undefined ? { host: authority } : {}),
      contentLength,
      scheme: ctx.scheme,
      remoteAddress: ctx.conn.remoteAddress,
      remotePort: ctx.conn.remotePort,
      serverPort: ctx.conn.localPort || ctx.port,
      serverName: options.server_name ?? ctx.host,
      documentRoot: options.document_root,
      ...tlsVars(ctx),
      params,
    })

    // The client went away: stop the upstream request too.
    const { cancel, done } = cancelOnClientClose(res)
    // $upstream_response_time: from the call to the uwsgi server to the end of its response.
    const note = upstreamNote(req)
    note.start = performance.now()
    let lease: UpstreamLease | undefined
    // Made afresh for each try: a spooled body can be read again, a streamed one cannot.
    const call = (to: UwsgiAddress) =>
      uwsgiCall(to, {
        vars,
        body: contentLength ? (bodySource(requestBody, req) ?? null) : null,
        head: ctx.method === 'HEAD',
        modifier1: options.modifier1,
        modifier2: options.modifier2,
        connectTimeout: options.connect_timeout,
        timeout: options.timeout,
        signal: cancel,
        onEarlyHints: (rawHeaders) => relayEarlyHints(res, rawHeaders, ctx.log),
      })
    try {
      let upstream: UwsgiResponse
      if (group) {
        const taken = await tryUpstreams({
          group,
          retryable: isIdempotent(ctx.method) && requestBody.kind !== 'stream',
          signal: cancel,
          attempt: (server) => {
            ;(note.addr ??= []).push(server.address)
            return call(server.address)
          },
          status: (r) => r.status,
          discard: (r) => r.body.destroy(),
        })
        lease = taken.lease
        upstream = taken.result
      } else {
        note.addr = [tags.upstream]
        upstream = await call(address)
      }
      const relayed = relayHeaders(upstream.rawHeaders, upstream.framing)
      const headers: [string, string][] = []
      for (let i = 0; i + 1 < relayed.length; i += 2) headers.push([relayed[i]!, relayed[i + 1]!])
      await relayResponse(
        ctx,
        {
          status: upstream.status,
          ...(upstream.statusMessage ? { reason: upstream.statusMessage } : {}),
          headers,
          body: upstream.body,
          complete: upstream.complete,
        },
        ctx.log,
        lease ? { upstream: lease.server.address } : tags,
        buffering,
      )
    } catch (err) {
      // The reply broke after its head (the server died mid-body): a failure of the server.
      lease?.release(cancel.aborted ? 'neutral' : 'failure')
      if (cancel.aborted) return
      throw err
    } finally {
      lease?.release()
      note.end ??= performance.now()
      done()
      await releaseBody(requestBody)
    }
  }

  return {
    handle,
    close: async () => {
      if (group) releaseGroup(group)
    },
  }
}

export const uwsgiAction: ActionDefinition<UwsgiOptions> = {
  name: 'uwsgi',
  summary: 'pass requests to a uwsgi server such as uWSGI (nginx `uwsgi_pass` with uwsgi_params)',
  schema: uwsgiSchema,
  create: (options, services) => createUwsgiHandler(options, services.log),
}
