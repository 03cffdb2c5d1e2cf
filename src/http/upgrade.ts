/*
 * An `upgrade` request arrives with its bare socket: node's HTTP machinery has let go of
 * it. upgradeResponse() puts a ServerResponse back on the socket, so that a handler can
 * still answer with plain HTTP (a refusal, an error, or the whole response when it does
 * not take the upgrade); the connection closes after that response.
 */
import { type IncomingMessage, ServerResponse } from 'node:http'
import type { Socket } from 'node:net'
import type { Duplex } from 'node:stream'

export function upgradeResponse(req: IncomingMessage, socket: Duplex): ServerResponse {
  socket.on('error', () => socket.destroy())
  const res = new ServerResponse(req)
  res.shouldKeepAlive = false
  res.assignSocket(socket as Socket)
  res.once('finish', () => {
    if (res.socket === socket || !res.socket) {
      socket.end()
      setTimeout(() => socket.destroy(), 1000).unref()
    }
  })
  return res
}
