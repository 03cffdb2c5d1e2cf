/*
 * A FastCGI server that misbehaves on purpose, for what php-fpm cannot be made to do:
 * close mid-response, answer garbage or OVERLOADED, never answer, and report the records it
 * received (ABORT_REQUEST). Built on the project's codec over a real Unix socket.
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { createServer, type Server, type Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import {
  decodeNameValuePairs,
  encodeEndRequest,
  encodeRecord,
  encodeStream,
  type FcgiRecord,
  RecordParser,
  RecordType,
} from '../../src/gateways/fastcgi/codec.js'

export interface FakeRequest {
  params: Map<string, string>
  stdin: Buffer
  socket: Socket
  /** The connection's number (1 for the first accepted), to see reuse. */
  connection: number
  /** Write records (or any bytes) to the client. */
  write(data: Buffer | Buffer[]): void
  /** STDOUT with the given bytes, then END_REQUEST(REQUEST_COMPLETE). */
  respond(stdout: string | Buffer, options?: { end?: boolean }): void
}

export type Behaviour = (req: FakeRequest) => void

export interface FakeServer {
  address: string
  /** Every record received, per connection number, in order. */
  records: Map<number, FcgiRecord[]>
  connections: number
  /** Sockets the server has not seen close yet. */
  open: Set<Socket>
  setBehaviour(b: Behaviour): void
  close(): Promise<void>
}

export const stdout = (data: string | Buffer): Buffer =>
  Buffer.concat(encodeStream(RecordType.STDOUT, 1, Buffer.from(data)))
export const endRequest = (protocolStatus = 0): Buffer =>
  Buffer.concat(encodeEndRequest(1, 0, protocolStatus))
export const emptyStdout = (): Buffer => Buffer.concat(encodeRecord(RecordType.STDOUT, 1))

export async function startFakeFastCGI(behaviour: Behaviour): Promise<FakeServer> {
  const dir = mkdtempSync(join(tmpdir(), 'gh-fakefcgi-'))
  const path = join(dir, 'fake.sock')
  let current = behaviour
  const records = new Map<number, FcgiRecord[]>()
  const open = new Set<Socket>()
  let count = 0
  const server: Server = createServer((socket) => {
    const connection = ++count
    open.add(socket)
    socket.on('close', () => open.delete(socket))
    socket.on('error', () => {})
    const list: FcgiRecord[] = []
    records.set(connection, list)
    let params: Buffer[] = []
    let stdin: Buffer[] = []
    const parser = new RecordParser((record) => {
      list.push({ ...record, content: Buffer.from(record.content) })
      if (record.type === RecordType.BEGIN_REQUEST) {
        params = []
        stdin = []
      } else if (record.type === RecordType.PARAMS && record.content.length > 0) params.push(record.content)
      else if (record.type === RecordType.STDIN) {
        if (record.content.length > 0) stdin.push(record.content)
        else {
          const write = (data: Buffer | Buffer[]) => {
            if (!socket.destroyed) socket.write(Array.isArray(data) ? Buffer.concat(data) : data)
          }
          current({
            params: new Map(decodeNameValuePairs(Buffer.concat(params), 1 << 20)),
            stdin: Buffer.concat(stdin),
            socket,
            connection,
            write,
            respond(out, options) {
              write([stdout(out), emptyStdout(), ...(options?.end === false ? [] : [endRequest()])])
            },
          })
        }
      }
    })
    socket.on('data', (chunk) => {
      try {
        parser.feed(chunk)
      } catch {
        socket.destroy()
      }
    })
  })
  await new Promise<void>((resolve) => server.listen(path, resolve))
  return {
    address: `unix:${path}`,
    records,
    get connections() {
      return count
    },
    open,
    setBehaviour(b) {
      current = b
    },
    async close() {
      for (const s of open) s.destroy()
      await new Promise<void>((resolve) => server.close(() => resolve()))
      rmSync(dir, { recursive: true, force: true })
    },
  }
}
