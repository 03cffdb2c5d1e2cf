/**
 * Read a request body of unknown length (chunked) to learn its length, for gateways whose
 * protocol needs the length before the body (CGI's and FastCGI's CONTENT_LENGTH, uwsgi's).
 * Small bodies stay in memory; past `memoryBytes` they go to a temporary file, as nginx's
 * client_body_buffer_size / client_body_temp_path do. Past `limit` the read stops with
 * GH_ERR_BODY_TOO_LARGE.
 *
 * The file is unlinked as soon as it is made, so nothing is left behind whatever happens to
 * the process, and stays open until dispose(): CGI gives it to a script as its stdin.
 */
import { randomUUID } from 'node:crypto'
import { type FileHandle, open, unlink } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Readable } from 'node:stream'
import { GatehouseError } from './errors.js'

export interface SpooledBody {
  length: number
  /**
   * The temporary file, open; undefined while the body is held in memory. Only ever written
   * and read at explicit positions, so its offset stays 0: a process given it as stdin
   * reads the body from the start.
   */
  readonly file: FileHandle | undefined
  /** A fresh stream of the body's bytes. */
  stream(): Readable
  /** Close the temporary file, if one was needed. Idempotent. */
  dispose(): Promise<void>
}

export interface SpoolOptions {
  /** Bodies up to this many bytes stay in memory (default 1 MiB). */
  memoryBytes?: number
  /**
   * Start of the temporary file's name (default `gatehouse-body-`). The name is gone at once;
   * it still shows in /proc/PID/fd and lsof, where it tells whose file it is.
   */
  prefix?: string
}

export async function spoolBody(
  source: Readable,
  limit: number,
  options: SpoolOptions = {},
): Promise<SpooledBody> {
  const memoryBytes = options.memoryBytes ?? 1024 * 1024
  const chunks: Buffer[] = []
  let length = 0
  let file: FileHandle | undefined
  try {
    // destroyOnReturn false: past the limit the source is left open so that a 413 can still
    // be written on its connection.
    for await (const chunk of source.iterator({ destroyOnReturn: false }) as AsyncIterable<Buffer>) {
      length += chunk.length
      if (length > limit) throw new GatehouseError('GH_ERR_BODY_TOO_LARGE', `more than ${limit} bytes`)
      if (file) {
        await writeAt(file, chunk, length - chunk.length)
      } else if (length > memoryBytes) {
        file = await openUnlinked(options.prefix ?? 'gatehouse-body-')
        const held = Buffer.concat(chunks)
        chunks.length = 0
        await writeAt(file, held, 0)
        await writeAt(file, chunk, held.length)
      } else {
        chunks.push(chunk)
      }
    }
  } catch (err) {
    await file?.close().catch(() => {})
    throw err
  }
  if (!file) {
    return {
      length,
      file: undefined,
      stream: () => Readable.from(chunks, { objectMode: false }),
      dispose: async () => {},
    }
  }
  const handle = file
  const opened: Readable[] = []
  let closing: Promise<void> | undefined
  return {
    length,
    file: handle,
    stream: () => {
      const s = handle.createReadStream({ start: 0, autoClose: false, highWaterMark: 64 * 1024 })
      opened.push(s)
      return s
    },
    dispose: () => {
      if (!closing) {
        for (const s of opened) s.destroy()
        closing = handle.close().catch(() => {})
      }
      return closing
    },
  }
}

/** A new temporary file, open for reading and writing, its name already gone. */
export async function openUnlinked(prefix: string): Promise<FileHandle> {
  const path = join(tmpdir(), `${prefix}${randomUUID()}`)
  const file = await open(path, 'wx+', 0o600)
  try {
    await unlink(path)
  } catch (err) {
    await file.close().catch(() => {})
    throw err
  }
  return file
}

async function writeAt(file: FileHandle, data: Buffer, position: number): Promise<void> {
  let done = 0
  while (done < data.length) {
    const { bytesWritten } = await file.write(data, done, data.length - done, position + done)
    done += bytesWritten
  }
}
