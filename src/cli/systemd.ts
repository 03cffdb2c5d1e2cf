/*
 * systemd integration of `gatehouse serve` (issue 17, "Running as a service"):
 *
 * - Socket activation: systemd (or `systemd-socket-activate`) opens the listening sockets and
 *   passes them from file descriptor 3 on, with LISTEN_PID (ours) and LISTEN_FDS (how many).
 *   They become the HTTP listeners (`fd://3`, ...) in place of `listen`, at start and on every
 *   reload, as gunicorn does. The variables are taken out of our environment, as
 *   sd_listen_fds(3) does, so no child believes the sockets are its own.
 * - Readiness (`Type=notify`): READY=1 once every listener is open, RELOADING=1 (with
 *   MONOTONIC_USEC) then READY=1 around a SIGHUP reload, STOPPING=1 when a stop begins, each
 *   with a STATUS= line. Node cannot send on a Unix datagram socket (node:dgram is UDP only),
 *   so the message is sent by systemd's own `systemd-notify` (execve, no shell). systemd then
 *   sees it come from a child: the unit needs `NotifyAccess=all` (docs/deploying.md), and
 *   MAINPID= names us.
 */
import { execFile } from 'node:child_process'
import { existsSync } from 'node:fs'
import type { Logger } from 'pino'

/** The listen addresses of the sockets systemd passed us (`fd://3`, ...), or null. */
export function socketActivation(env: NodeJS.ProcessEnv = process.env): string[] | null {
  const pid = env.LISTEN_PID
  const count = env.LISTEN_FDS
  delete env.LISTEN_PID
  delete env.LISTEN_FDS
  delete env.LISTEN_FDNAMES
  if (pid === undefined || count === undefined) return null
  // Meant for another process (we were started by a child of the one they were for).
  if (Number(pid) !== process.pid) return null
  const n = Number(count)
  if (!Number.isInteger(n) || n < 1) return null
  return Array.from({ length: n }, (_, i) => `fd://${3 + i}`)
}

const SYSTEMD_NOTIFY = ['/usr/bin/systemd-notify', '/bin/systemd-notify']

/** sd_notify(3) through `systemd-notify`; does nothing without NOTIFY_SOCKET. */
export class Notifier {
  private readonly socket: string | undefined
  private readonly program: string | undefined

  constructor(
    private readonly log: Logger,
    env: NodeJS.ProcessEnv = process.env,
  ) {
    this.socket = env.NOTIFY_SOCKET
    this.program = this.socket ? SYSTEMD_NOTIFY.find((p) => existsSync(p)) : undefined
    if (this.socket && !this.program)
      log.warn(
        { notify_socket: this.socket },
        'NOTIFY_SOCKET is set but systemd-notify is not installed: systemd will not hear READY=1',
      )
  }

  get enabled(): boolean {
    return this.program !== undefined
  }

  ready(status: string): void {
    this.send({ READY: '1', STATUS: status })
  }

  reloading(): void {
    const usec = process.hrtime.bigint() / 1000n // CLOCK_MONOTONIC, as systemd wants it
    this.send({ RELOADING: '1', MONOTONIC_USEC: String(usec), STATUS: 'reloading the configuration' })
  }

  stopping(): void {
    this.send({ STOPPING: '1', STATUS: 'shutting down' })
  }

  /** The messages leave one after another, in the order sent (READY=1 before STOPPING=1). */
  private queue: Promise<void> = Promise.resolve()

  private send(fields: Record<string, string>): void {
    const program = this.program
    if (!program) return
    const args = Object.entries({ ...fields, MAINPID: String(process.pid) }).map(([k, v]) => `${k}=${v}`)
    this.queue = this.queue.then(
      () =>
        new Promise<void>((done) => {
          execFile(
            program,
            args,
            { env: { NOTIFY_SOCKET: this.socket! }, timeout: 5000 },
            (err, _out, stderr) => {
              if (err)
                this.log.warn({ err, stderr: String(stderr).trim() }, `systemd-notify ${args[0]} failed`)
              done()
            },
          )
        }),
    )
  }

  /** Resolves once every message sent so far has left (before the process exits). */
  flushed(): Promise<void> {
    return this.queue
  }
}
