/*
 * A request body as a gateway hands it on. A Content-Length body streams as it arrives; a
 * chunked one (and any body when buffering is asked for) is read whole first, in memory up
 * to BODY_MEMORY_BYTES and then in an unlinked temporary file, so that its length is known
 * (RFC 3875 4.1.2: CONTENT_LENGTH; php-fpm reads no body without it) and a slow client
 * does not hold an upstream worker while it uploads.
 */
import { randomUUID } from 'node:crypto'
import { type FileHandle, open, unlink } from 'node:fs/promises'
import type { IncomingMessage } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Readable } from 'node:stream'
import { GatehouseError } from '../errors.js'

/** Bodies up to this size are held in memory while spooled; larger ones go to a temp file. */
export const BODY_MEMORY_BYTES = 64 * 1024

export type RequestBody =
  | { kind: 'none' }
  /** Read from the request as it arrives (Content-Length known). */
  | { kind: 'stream'; length: number }
  | { kind: 'memory'; data: Buffer }
  | { kind: 'file'; handle: FileHandle; length: number; stream?: Readable }

/** The client went away while its body was being read. */
export class RequestBodyAborted extends Error {}

/**
 * How the body of `req` will be passed on. Spooling counts bytes against `limit`
 * (GH_ERR_BODY_TOO_LARGE); a Content-Length over the limit was refused by the front already.
 */
export async function readRequestBody(
  req: IncomingMessage,
  options: { limit: number; buffer: boolean },
): Promise<RequestBody> {
  const chunked = req.headers['transfer-encoding'] !== undefined
  const cl = req.headers['content-length']
  if (!chunked && cl === undefined) return { kind: 'none' }
  if (!chunked && !options.buffer) return { kind: 'stream', length: Number(cl) }
  return spool(req, options.limit)
}

export function bodyLength(body: RequestBody): number | undefined {
  switch (body.kind) {
    case 'none':
      return undefined
    case 'memory':
      return body.data.length
    default:
      return body.length
  }
}

/** The body as a Buffer or a stream read from its start; undefined when there is none. */
export function bodySource(body: RequestBody, req: IncomingMessage): Buffer | Readable | undefined {
  switch (body.kind) {
    case 'none':
      return undefined
    case 'stream':
      return req
    case 'memory':
      return body.data
    case 'file':
      body.stream ??= body.handle.createReadStream({ start: 0, autoClose: true, highWaterMark: 64 * 1024 })
      return body.stream
  }
}

/** Close a spooled body's file (its stream, if one was made, closes it). */
export async function releaseBody(body: RequestBody): Promise<void> {
  if (body.kind !== 'file') return
  if (body.stream) body.stream.destroy()
  else await body.handle.close().catch(() => {})
}

/**
 * Read the body whole. Event-driven rather than `for await`: leaving an async iterator early
 * destroys the request, and with it the socket the 413 has to go out on.
 */
function spool(req: IncomingMessage, limit: number): Promise<RequestBody> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = []
    let length = 0
    let file: FileHandle | null = null
    let writing: Promise<void> = Promise.resolve()
    let settled = false
    const detach = () => {
      req.off('data', onData)
      req.off('end', onEnd)
      req.off('close', onClose)
      req.off('error', onClose)
    }
    const fail = (err: Error) => {
      if (settled) return
      settled = true
      detach()
      // What is left of the body is read and dropped; the caller answers and closes.
      req.resume()
      void writing.then(() => file?.close()).catch(() => {})
      reject(err)
    }
    const onData = (chunk: Buffer) => {
      length += chunk.length
      if (length > limit) {
        fail(new GatehouseError('GH_ERR_BODY_TOO_LARGE', `over ${limit} bytes`))
        return
      }
      if (!file && length <= BODY_MEMORY_BYTES) {
        chunks.push(chunk)
        return
      }
      req.pause()
      const position = length - chunk.length
      writing = writing
        .then(async () => {
          if (!file) {
            const path = join(tmpdir(), `gatehouse-body-${randomUUID()}`)
            file = await open(path, 'wx+', 0o600)
            // Unlinked at once: nothing is left behind whatever happens to us.
            await unlink(path)
            const head = Buffer.concat(chunks)
            chunks.length = 0
            await writeAll(file, head, 0)
          }
          await writeAll(file, chunk, position)
          if (!settled) req.resume()
        })
        .catch((err: unknown) => fail(err as Error))
    }
    const onEnd = () => {
      detach()
      void writing.then(() => {
        if (settled) return
        settled = true
        if (file) resolve({ kind: 'file', handle: file, length })
        else resolve({ kind: 'memory', data: chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks) })
      })
    }
    const onClose = () => fail(new RequestBodyAborted('client went away while sending the body'))
    req.on('data', onData)
    req.on('end', onEnd)
    req.on('close', onClose)
    req.on('error', onClose)
  })
}

async function writeAll(file: FileHandle, data: Buffer, position: number): Promise<void> {
  let done = 0
  while (done < data.length) {
    const { bytesWritten } = await file.write(data, done, data.length - done, position + done)
    done += bytesWritten
  }
}
