/**
 * Read a request body of unknown length (chunked) to learn its length, for gateways whose
 * protocol needs the length before the body (uwsgi's CONTENT_LENGTH; CGI's too). Small
 * bodies stay in memory; past `memoryBytes` they go to a temporary file, as nginx's
 * client_body_buffer_size / client_body_temp_path do. Past `limit` the read stops with
 * GH_ERR_BODY_TOO_LARGE.
 */
import { createReadStream } from 'node:fs'
import { type FileHandle, mkdtemp, open, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Readable } from 'node:stream'
import { GatehouseError } from './errors.js'

export interface SpooledBody {
  length: number
  /** A fresh stream of the body's bytes. */
  stream(): Readable
  /** Remove the temporary file, if one was needed. */
  dispose(): Promise<void>
}

export async function spoolBody(
  source: Readable,
  limit: number,
  memoryBytes = 1024 * 1024,
): Promise<SpooledBody> {
  const chunks: Buffer[] = []
  let length = 0
  let dir: string | undefined
  let file: FileHandle | undefined
  const cleanup = async () => {
    await file?.close().catch(() => {})
    file = undefined
    if (dir) await rm(dir, { recursive: true, force: true })
  }
  try {
    // destroyOnReturn false: past the limit the source is left open so that a 413 can still
    // be written on its connection.
    for await (const chunk of source.iterator({ destroyOnReturn: false }) as AsyncIterable<Buffer>) {
      length += chunk.length
      if (length > limit) throw new GatehouseError('GH_ERR_BODY_TOO_LARGE', `more than ${limit} bytes`)
      if (file) {
        await file.write(chunk)
      } else if (length > memoryBytes) {
        dir = await mkdtemp(join(tmpdir(), 'gatehouse-body-'))
        file = await open(join(dir, 'body'), 'w+', 0o600)
        for (const c of chunks) await file.write(c)
        chunks.length = 0
        await file.write(chunk)
      } else {
        chunks.push(chunk)
      }
    }
  } catch (err) {
    await cleanup()
    throw err
  }
  if (!file) {
    return {
      length,
      stream: () => Readable.from(chunks, { objectMode: false }),
      dispose: async () => {},
    }
  }
  await file.close()
  file = undefined
  const path = join(dir!, 'body')
  const opened: Readable[] = []
  return {
    length,
    stream: () => {
      const s = createReadStream(path, { highWaterMark: 64 * 1024 })
      opened.push(s)
      return s
    },
    dispose: async () => {
      for (const s of opened) s.destroy()
      await cleanup()
    },
  }
}
