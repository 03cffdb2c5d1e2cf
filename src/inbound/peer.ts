/*
 * What the application-side servers (FastCGI, uwsgi) do alike with the web server that
 * connects to them. Such a peer is trusted: it names the client (REMOTE_ADDR) and the
 * scheme, and whoever can reach the port can make the server see any request. So TCP
 * peers are admitted only from an allow-list (loopback by default, like gunicorn's
 * forwarded_allow_ips); Unix-socket peers have no address, and their socket file's
 * permissions are the access control.
 */
import { reasonPhrase } from '../core/http-headers.js'
import { type BlockList, isIP, type Socket } from 'node:net'
import type { Logger } from 'pino'
import type { GatewayRequestHead } from '../cgi-vars/request.js'
import { ERROR_CODES, type ErrorCode } from '../core/errors.js'
import type { ConnectionInfo } from '../core/types.js'

/** How long a connection may stay half-closed after its last reply before it is destroyed. */
const LINGER_MS = 5000

/** `::ffff:192.0.2.1` is the IPv4 peer 192.0.2.1 on a dual-stack socket. */
export function stripMapped(address: string | undefined): string | undefined {
  return address?.startsWith('::ffff:') ? address.slice(7) : address
}

/**
 * A new connection: true when the peer may talk to us. One that may not is destroyed and
 * logged, naming the setting (`fastcgi_allow`, `uwsgi_allow`) that would admit it.
 */
export function admitPeer(
  socket: Socket,
  allowList: BlockList,
  log: Logger,
  protocol: string,
  setting: string,
): boolean {
  const remote = socket.remoteAddress
  if (remote === undefined) return true
  const address = stripMapped(remote)!
  if (!allowList.check(address, isIP(address) === 6 ? 'ipv6' : 'ipv4')) {
    log.warn(
      { code: 'GH_ERR_FORBIDDEN', remote_addr: remote },
      `${protocol} connection refused: address not in ${setting}`,
    )
    socket.destroy()
    return false
  }
  // As node's HTTP server: a reply written in pieces is not held back by Nagle's algorithm.
  socket.setNoDelay(true)
  return true
}

/** The client and the local end of a request: what the peer's variables name, else the socket's own. */
export function requestConnection(head: GatewayRequestHead, socket: Socket): ConnectionInfo {
  return {
    remoteAddress: head.remoteAddress ?? stripMapped(socket.remoteAddress) ?? '',
    remotePort: head.remotePort ?? socket.remotePort ?? 0,
    localAddress: stripMapped(socket.localAddress) ?? '',
    localPort: head.serverPort ?? socket.localPort ?? 0,
    secure: head.secure,
  }
}

/**
 * The plain-text answer to a request refused before any handler saw it, saying what was
 * wrong: the web server in front relays it, and a person who pointed curl at the port
 * reads it.
 */
export function refusal(code: ErrorCode, message: string): { status: number; reason: string; body: string } {
  const status = ERROR_CODES[code].status ?? 400
  const reason = reasonPhrase(status)
  return { status, reason, body: `${status} ${reason}: ${message}\n` }
}

/**
 * End the connection after the last reply (with `last` as its final bytes), and destroy it
 * if the peer has not closed its side within LINGER_MS.
 */
export function endAfterReply(socket: Socket, last?: string | Buffer): void {
  if (last === undefined) socket.end()
  else socket.end(last)
  setTimeout(() => socket.destroy(), LINGER_MS).unref()
}
