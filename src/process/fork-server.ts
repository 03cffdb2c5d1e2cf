/**
 * The Node side of python/gatehouse_spawn/forkserver.py: a small long-lived process that
 * starts scripts for us.
 *
 * Why: child_process.spawn forks the whole Node process, and fork costs grow with the
 * parent's memory (page tables are copied): on our 2-core box 784 spawns/s from a 64 MB Node,
 * 175/s from a 169 MB one. The fork server is a ~10 MB Python process that starts scripts
 * with posix_spawn (vfork + execve), at the same cost whatever Node's size; Node pays for a
 * Unix-socket connection per script.
 *
 * Per script: a connection carries the request (argv, the exact environment, cwd) and then
 * becomes the script's stdout. A request with a body opens a second connection for stdin
 * (forkserver.py says why it is not the same socket). The pid, execve failures, stderr and
 * the exit status come back as framed records on the fork server's stdout, tagged with a
 * token Node chose per request; the pid record comes before any other, so spawn() resolves
 * with the pid before the caller handles any output. Signals stay with Node: the script
 * leads its own process group (setsid) and Node kills `-pid` as for a direct spawn.
 */
import { type ChildProcess, spawn } from 'node:child_process'
import { EventEmitter } from 'node:events'
import { rmSync } from 'node:fs'
import { connect, type Socket } from 'node:net'
import { constants } from 'node:os'
import { join } from 'node:path'
import { PassThrough, type Readable } from 'node:stream'
import { fileURLToPath } from 'node:url'
import { childIdentity } from './identity.js'
import { makeRunDir } from './run-dir.js'
import type { Logger } from 'pino'

export const FORK_SERVER_SCRIPT = fileURLToPath(
  new URL('../../../python/gatehouse_spawn/forkserver.py', import.meta.url),
)

const HAS_STDIN = 1
const RECORD_HEAD = 9
const STOP_GRACE_MS = 2000
const START_TIMEOUT_MS = 10_000

/** What a script is started with. Never a shell: argv[0] is executed directly. */
export interface ScriptSpawn {
  argv: readonly string[]
  env: Readonly<Record<string, string>>
  cwd: string
  /** A stdin connection for a request body; without it stdin is /dev/null. */
  stdin: boolean
}

/** The fork server could not be started at all (no interpreter, or it died at start). */
export class ForkServerUnavailable extends Error {}

/**
 * A script started by the fork server. Shaped like the parts of ChildProcess the CGI
 * handler uses: pid, stdin, stdout, stderr, and the 'exit' (code, signal), 'close' and
 * 'error' events. 'error' means it never ran (execve failed) or that the fork server died
 * under it (`lost`); 'exit' follows either way.
 */
export class ForkedScript extends EventEmitter {
  pid: number | undefined
  stdin: Socket | null = null
  readonly stderr = new PassThrough()
  /** The fork server died while this script ran: no exit status will come. */
  lost = false
  /** @internal settles spawn(): 'P' (pid) or 'F' (not started) */
  started: { resolve: (pid: number) => void; reject: (err: Error) => void } | null = null
  private exited = false
  private closesNeeded = 3
  /** Exit records can arrive before the pid does: held until the caller has its listeners on. */
  private held: (() => void) | null = null
  private holding = true

  constructor(
    readonly stdout: Socket,
    readonly token: number,
  ) {
    super()
    stdout.once('close', () => this.closeOne())
    this.stderr.once('close', () => this.closeOne())
  }

  /** 'close' after 'exit' and both output streams closed, as for a ChildProcess. */
  private closeOne(): void {
    if (--this.closesNeeded === 0) this.emit('close')
  }

  /** @internal records from the fork server */
  onStderr(data: Buffer): void {
    if (!this.stderr.destroyed) this.stderr.write(data)
  }

  /** @internal */
  onStderrClosed(): void {
    if (!this.stderr.destroyed) this.stderr.end()
  }

  /** @internal 'error' only when the fork server is lost; 'exit' in any case. */
  onExit(code: number | null, signal: NodeJS.Signals | null, error?: Error): void {
    if (this.exited) return
    this.exited = true
    const emit = () => {
      if (error) this.emit('error', error)
      this.emit('exit', code, signal)
      this.closeOne()
    }
    if (this.holding) this.held = emit
    else emit()
  }

  /** @internal after spawn() resolved: events from here on are emitted as they come. */
  release(): void {
    setImmediate(() => {
      this.holding = false
      const held = this.held
      this.held = null
      held?.()
    })
  }
}

interface Control {
  child: ChildProcess
  dir: string
  socketPath: string
  ready: Promise<void>
  scripts: Map<number, ForkedScript>
  exited: boolean
}

/**
 * One fork server process, started on first use and restarted on the next use after it
 * died. Scripts running when it dies get 'error' (lost) and 'exit'.
 */
export class ForkServer {
  private control: Control | null = null
  private nextToken = 1
  private closed = false

  constructor(
    private readonly python: string,
    private readonly log: Logger,
  ) {}

  /** pid of the fork server process while one runs. */
  get pid(): number | undefined {
    return this.control && !this.control.exited ? this.control.child.pid : undefined
  }

  /**
   * Start a script. Resolves once its pid is known; rejects with ForkServerUnavailable when
   * the fork server cannot start, or an Error when the script could not be forked.
   */
  async spawn(request: ScriptSpawn): Promise<ForkedScript> {
    const control = this.current()
    await control.ready
    const token = this.nextToken
    this.nextToken = (this.nextToken % 0xffff_ffff) + 1
    const frame = runFrame(token, request)
    const out = connect(control.socketPath)
    const script = new ForkedScript(out, token)
    const pid = new Promise<number>((resolve, reject) => {
      script.started = { resolve, reject }
    })
    control.scripts.set(token, script)
    script.once('close', () => control.scripts.delete(token))
    // Output that comes before the caller listens waits in the socket, which is paused.
    out.on('error', (err) => {
      script.started?.reject(err)
      script.started = null
    })
    out.write(frame)
    if (request.stdin) {
      const stdin = connect(control.socketPath)
      const attach = Buffer.alloc(9)
      attach.writeUInt32LE(5, 0)
      attach.write('I', 4, 'latin1')
      attach.writeUInt32LE(token, 5)
      stdin.on('error', () => {})
      stdin.write(attach)
      // The script may write to its stdin socket; nothing of it is wanted, but reading is
      // what lets us see its end.
      stdin.resume()
      script.stdin = stdin
    }
    try {
      script.pid = await pid
    } catch (err) {
      script.stdin?.destroy()
      out.destroy()
      script.stderr.destroy()
      control.scripts.delete(token)
      throw err
    }
    script.release()
    return script
  }

  /** Stop the fork server (scripts it started are not touched); later spawns restart it. */
  async close(): Promise<void> {
    this.closed = true
    const control = this.control
    this.control = null
    if (control) await stopControl(control)
  }

  private current(): Control {
    if (this.closed) throw new ForkServerUnavailable('the fork server was stopped')
    if (this.control && !this.control.exited) return this.control
    this.control = this.start()
    return this.control
  }

  private start(): Control {
    const dir = makeRunDir('gatehouse-spawn-')
    const socketPath = join(dir, 's')
    // -I: no environment variables, no user site; -S: no site module (a smaller process
    // forks faster). Its own environment is empty: scripts get theirs from each request.
    const child = spawn(this.python, ['-I', '-S', FORK_SERVER_SCRIPT, socketPath, String(process.pid)], {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: {},
      shell: false,
      ...childIdentity(),
    })
    const control: Control = {
      child,
      dir,
      socketPath,
      scripts: new Map(),
      exited: false,
      ready: Promise.resolve(),
    }
    let started = false
    control.ready = new Promise<void>((resolve, reject) => {
      const startTimer = setTimeout(() => {
        reject(
          new ForkServerUnavailable(
            `${this.python} did not start the fork server within ${START_TIMEOUT_MS} ms`,
          ),
        )
        child.kill('SIGKILL')
      }, START_TIMEOUT_MS)
      child.once('error', (err) => {
        if (!started) {
          rmSync(dir, { recursive: true, force: true })
          reject(new ForkServerUnavailable(`${this.python}: ${err.message}`, { cause: err }))
        } else this.log.warn({ err }, 'cgi: fork server error')
      })
      child.once('exit', (code, signal) => {
        clearTimeout(startTimer)
        control.exited = true
        rmSync(dir, { recursive: true, force: true })
        if (!started) {
          reject(new ForkServerUnavailable(`${this.python} exited at start (${signal ?? `status ${code}`})`))
          return
        }
        if (this.control === control)
          this.log.warn(
            { fork_server: child.pid, code, signal },
            'cgi: fork server died; restarting it on next use',
          )
        const lost = new Error('the CGI fork server died while the script ran')
        for (const script of control.scripts.values()) {
          if (script.started) {
            script.started.reject(lost)
            script.started = null
            continue
          }
          script.lost = true
          script.onStderrClosed()
          script.onExit(null, null, lost)
        }
      })
      readRecords(child.stdout!, (type, token, payload) => {
        if (type === 0x53 /* S */) {
          clearTimeout(startTimer)
          started = true
          resolve()
          return
        }
        const script = control.scripts.get(token)
        if (!script) return
        if (type === 0x45 /* E */) script.onStderr(payload)
        else if (type === 0x43 /* C */) script.onStderrClosed()
        else if (type === 0x50 /* P */ && payload.length >= 4) {
          script.started?.resolve(payload.readUInt32LE(0))
          script.started = null
        } else if (type === 0x46 /* F */ && payload.length >= 4) {
          const errno = payload.readInt32LE(0)
          const err = Object.assign(new Error(payload.subarray(4).toString('utf8')), { errno })
          script.started?.reject(err)
          script.started = null
        } else if (type === 0x58 /* X */ && payload.length >= 12) {
          const code = payload.readInt32LE(4)
          const signum = payload.readInt32LE(8)
          script.onExit(code < 0 ? null : code, code < 0 ? signalName(signum) : null)
        }
      })
    })
    // Unhandled otherwise when nobody awaits `ready` before it fails.
    control.ready.catch(() => {})
    child.stdin!.on('error', () => {})
    child.stderr!.setEncoding('utf8')
    child.stderr!.on('data', (text: string) => {
      for (const line of text.split('\n'))
        if (line) this.log.warn({ fork_server: child.pid }, `cgi fork server: ${line}`)
    })
    return control
  }
}

async function stopControl(control: Control): Promise<void> {
  if (control.exited) return
  const exited = new Promise<void>((r) => control.child.once('exit', () => r()))
  // EOF on its stdin is its signal to stop.
  control.child.stdin!.end()
  const timer = setTimeout(() => control.child.kill('SIGKILL'), STOP_GRACE_MS)
  await exited
  clearTimeout(timer)
}

/** u32 length, "R", token, flags, argc, envc, then cwd, argv, env as NUL-terminated strings. */
function runFrame(token: number, request: ScriptSpawn): Buffer {
  const strings = [request.cwd, ...request.argv]
  const env = Object.entries(request.env)
  for (const [name, value] of env) strings.push(`${name}=${value}`)
  const parts = strings.map((s) => {
    // execve takes C strings; spawn() refuses these too.
    if (s.includes('\0')) throw new TypeError('NUL byte in an argument or the environment')
    return Buffer.from(`${s}\0`, 'utf8')
  })
  const head = Buffer.alloc(21)
  const bodyLength = parts.reduce((n, p) => n + p.length, 17)
  head.writeUInt32LE(bodyLength, 0)
  head.write('R', 4, 'latin1')
  head.writeUInt32LE(token, 5)
  head.writeUInt32LE(request.stdin ? HAS_STDIN : 0, 9)
  head.writeUInt32LE(request.argv.length, 13)
  head.writeUInt32LE(env.length, 17)
  return Buffer.concat([head, ...parts])
}

function readRecords(
  stream: Readable,
  onRecord: (type: number, token: number, payload: Buffer) => void,
): void {
  let buffered: Buffer = Buffer.alloc(0)
  stream.on('data', (chunk: Buffer) => {
    buffered = buffered.length === 0 ? chunk : Buffer.concat([buffered, chunk])
    let offset = 0
    while (buffered.length - offset >= RECORD_HEAD) {
      const length = buffered.readUInt32LE(offset + 5)
      if (buffered.length - offset < RECORD_HEAD + length) break
      onRecord(
        buffered[offset]!,
        buffered.readUInt32LE(offset + 1),
        buffered.subarray(offset + RECORD_HEAD, offset + RECORD_HEAD + length),
      )
      offset += RECORD_HEAD + length
    }
    buffered = offset === buffered.length ? Buffer.alloc(0) : buffered.subarray(offset)
  })
}

const SIGNAL_NAMES = new Map<number, NodeJS.Signals>(
  Object.entries(constants.signals).map(([name, n]) => [n, name as NodeJS.Signals]),
)

function signalName(signum: number): NodeJS.Signals {
  return SIGNAL_NAMES.get(signum) ?? 'SIGKILL'
}
