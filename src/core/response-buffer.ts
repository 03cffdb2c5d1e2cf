/*
 * Response buffering (issue 18, item 3): the bytes an upstream sends are taken as fast as it
 * sends them, whatever the client's pace, so a synchronous worker (a WSGI thread, php-cgi,
 * php-fpm, a uwsgi or CGI process) is free as soon as its app is done, and a client that
 * reads slowly, or not at all, holds only memory and disk, never a worker. This is what
 * nginx's proxy_buffering / fastcgi_buffering / uwsgi_buffering do in front of those peers.
 *
 * Up to `memoryBytes` wait in the socket's own queue (node:http keeps what the kernel did not
 * take); past that the rest goes to an unlinked temporary file (nginx: the temp path), and
 * the file is read back into the socket as the client drains it. Past `maxFileBytes` held in
 * the file, write() says false and the producer waits for 'drain': backpressure, as without
 * buffering. `maxFileBytes` 0 means memory only.
 *
 * Hand-written: it is the product's own plumbing (a FIFO split between memory and a file,
 * driven by a ServerResponse's drain events); no library does this for a ServerResponse.
 */
import { EventEmitter } from 'node:events'
import type { FileHandle } from 'node:fs/promises'
import type { ServerResponse } from 'node:http'
import { openUnlinked } from './body-spool.js'

/** What a response body is written to: a ServerResponse, or a ResponseBuffer in front of one. */
export interface BodySink {
  /** false: stop writing until 'drain'. */
  write(chunk: Buffer): boolean
  end(chunk?: Buffer): void
  once(event: 'drain', listener: () => void): unknown
  on(event: 'drain', listener: () => void): unknown
  off(event: 'drain', listener: () => void): unknown
}

export interface ResponseBufferOptions {
  /** Bytes held in memory (the socket's queue) before the rest goes to a file. */
  memoryBytes: number
  /** Bytes held in the temporary file before the producer is told to wait; 0: no file. */
  maxFileBytes: number
  /** Start of the temporary file's name (it is unlinked at once; /proc/PID/fd still shows it). */
  prefix?: string
}

/** What is read back from the file per write to the socket. */
const READ_BYTES = 64 * 1024

export class ResponseBuffer extends EventEmitter implements BodySink {
  private file: Promise<FileHandle> | undefined
  /** File offsets: appended (scheduled), written (on disk), sent (read back into the socket). */
  private appended = 0
  private written = 0
  private sent = 0
  /** The last scheduled file write; writes run one after another. */
  private writing: Promise<void> = Promise.resolve()
  private pumping = false
  /** The producer was told false and waits for 'drain'. */
  private waiting = false
  private ending: { chunk: Buffer | undefined } | undefined
  private closed = false
  /** Bytes that ever went to the file (for tests and logs). */
  spilledBytes = 0

  constructor(
    private readonly res: ServerResponse,
    private readonly options: ResponseBufferOptions,
  ) {
    super()
    res.on('drain', this.onResDrain)
    res.once('close', this.onResClose)
  }

  /** Bytes waiting in the file. */
  get fileBytes(): number {
    return this.appended - this.sent
  }

  write(chunk: Buffer): boolean {
    if (this.closed || this.ending) return true
    const { res, options } = this
    if (this.appended === 0 && (res.writableLength < options.memoryBytes || options.maxFileBytes === 0)) {
      res.write(chunk)
      if (options.maxFileBytes > 0 || res.writableLength < options.memoryBytes) return true
      // Memory only, and memory is full: wait for the socket.
      this.waiting = true
      return false
    }
    this.append(chunk)
    if (this.fileBytes < options.maxFileBytes) return true
    this.waiting = true
    return false
  }

  end(chunk?: Buffer): void {
    if (this.closed || this.ending) return
    if (this.appended === 0) {
      this.detach()
      this.res.end(chunk)
      return
    }
    this.ending = { chunk }
  }

  private append(chunk: Buffer): void {
    const at = this.appended
    this.appended += chunk.length
    this.spilledBytes += chunk.length
    this.file ??= openUnlinked(this.options.prefix ?? 'gatehouse-response-')
    const file = this.file
    this.writing = this.writing
      .then(async () => {
        const handle = await file
        let done = 0
        while (done < chunk.length) {
          const { bytesWritten } = await handle.write(chunk, done, chunk.length - done, at + done)
          done += bytesWritten
        }
        this.written = at + chunk.length
      })
      .catch((err: unknown) => this.fail(err))
    this.pump()
  }

  /** File -> socket, as the socket drains, until the file is empty. */
  private pump(): void {
    if (this.pumping) return
    this.pumping = true
    void this.run()
      .catch((err: unknown) => this.fail(err))
      .finally(() => {
        this.pumping = false
      })
  }

  private async run(): Promise<void> {
    const { res } = this
    while (!this.closed) {
      if (this.sent === this.appended) {
        // Caught up: later writes go straight to the socket again, from the file's start.
        this.sent = this.written = this.appended = 0
        this.release()
        if (this.ending) {
          this.detach()
          res.end(this.ending.chunk)
        }
        return
      }
      if (this.sent === this.written) {
        await this.writing
        continue
      }
      if (res.writableLength >= this.options.memoryBytes) return // onResDrain resumes
      const n = Math.min(READ_BYTES, this.written - this.sent)
      const piece = Buffer.allocUnsafe(n)
      const handle = await this.file!
      const { bytesRead } = await handle.read(piece, 0, n, this.sent)
      if (this.closed) return
      if (bytesRead === 0) throw new Error('response buffer file ended early')
      this.sent += bytesRead
      res.write(bytesRead === n ? piece : piece.subarray(0, bytesRead))
      this.release()
    }
  }

  /** Tell a waiting producer it may write again. */
  private release(): void {
    if (!this.waiting || this.closed) return
    const roomy =
      this.options.maxFileBytes > 0
        ? this.fileBytes < this.options.maxFileBytes
        : this.res.writableLength < this.options.memoryBytes
    if (!roomy) return
    this.waiting = false
    this.emit('drain')
  }

  private readonly onResDrain = (): void => {
    if (this.appended > 0) this.pump()
    else this.release()
  }

  private readonly onResClose = (): void => {
    this.closed = true
    this.waiting = false
    this.detach()
    this.closeFile()
  }

  private fail(err: unknown): void {
    if (this.closed) return
    this.closed = true
    this.detach()
    this.closeFile()
    // The body cannot be finished honestly: cut the connection.
    this.res.destroy(err instanceof Error ? err : new Error(String(err)))
  }

  /** Done writing to the socket: only its close (which closes the file) still matters. */
  private detach(): void {
    this.res.off('drain', this.onResDrain)
  }

  private closeFile(): void {
    const file = this.file
    this.file = undefined
    if (file)
      void this.writing
        .then(() => file)
        .then((h) => h.close())
        .catch(() => {})
  }
}
