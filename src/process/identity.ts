/*
 * The user and group the server's children run as (`user`/`group`, gunicorn's --user and
 * --group, php-fpm's pool user): set once by `gatehouse serve` when it starts as root,
 * before any pool starts. Every spawn (pool workers, the CGI fork server, CGI scripts) takes
 * it, and the private socket directories are handed to it, so that nothing a request can
 * reach runs as root even before the server itself drops to it (after binding).
 */
import { chownSync } from 'node:fs'

export interface Identity {
  uid: number
  gid: number
}

let identity: Identity | undefined

/** Children from now on run as `id` (undefined: as the server). */
export function setChildIdentity(id: Identity | undefined): void {
  identity = id
}

/** Spawn options (`uid`, `gid`) for a child: empty when no identity is set. */
export function childIdentity(): { uid?: number; gid?: number } {
  return identity ? { uid: identity.uid, gid: identity.gid } : {}
}

/** Give a directory the children create sockets in to their user. */
export function ownForChildren(path: string): void {
  if (identity) chownSync(path, identity.uid, identity.gid)
}
