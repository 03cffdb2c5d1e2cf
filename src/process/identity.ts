/*
 * The user and group the server's children run as (`user`/`group`, gunicorn's --user and
 * --group, php-fpm's pool user): set once by `gatehouse serve` when it starts as root,
 * before any pool starts. Every spawn (pool workers, the CGI fork server, CGI scripts) takes
 * it, and the private socket directories are handed to it, so that nothing a request can
 * reach runs as root even before the server itself drops to it (after binding).
 */
import { execFileSync } from 'node:child_process'
import { chownSync } from 'node:fs'
import { GatehouseError } from '../core/errors.js'

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

function lookup(db: 'passwd' | 'group', key: string | number): string[] | null {
  try {
    const line = execFileSync('getent', [db, String(key)], { encoding: 'utf8' }).split('\n')[0]!
    return line ? line.split(':') : null
  } catch {
    return null
  }
}

/**
 * A user (and group: default its primary one) by name or id, through `getent` (the system's
 * NSS: /etc/passwd, LDAP, ...), which Node has no call for. A message when there is none.
 */
export function lookupIdentity(
  user: string | number,
  group?: string | number,
): (Identity & { user: string }) | string {
  const pw = lookup('passwd', user)
  if (!pw) return `user = ${JSON.stringify(user)}: no such user`
  let gid = Number(pw[3])
  if (group !== undefined) {
    const gr = lookup('group', group)
    if (!gr) return `group = ${JSON.stringify(group)}: no such group`
    gid = Number(gr[2])
  }
  return { user: pw[0]!, uid: Number(pw[2]), gid }
}

/**
 * A pool's own `user`/`group` (php-fpm's per-pool user): its workers' identity, checked now.
 * Undefined when the pool names none (the server's children identity applies). Throws
 * GH_ERR_WORKER_START (the CLI's one line, exit 1) when the user does not exist, or when becoming them needs root we do not have.
 */
export function poolIdentity(
  pool: string,
  user: string | number | undefined,
  group: string | number | undefined,
): Identity | undefined {
  if (user === undefined) {
    if (group !== undefined) throw new GatehouseError('GH_ERR_WORKER_START', `pool ${pool}: group needs user`)
    return undefined
  }
  const found = lookupIdentity(user, group)
  if (typeof found === 'string') throw new GatehouseError('GH_ERR_WORKER_START', `pool ${pool}: ${found}`)
  const self = process.getuid?.()
  if (self !== 0 && (found.uid !== self || found.gid !== process.getgid?.()))
    throw new GatehouseError(
      'GH_ERR_WORKER_START',
      `pool ${pool}: user = ${JSON.stringify(user)}: only a server started as root can run workers as another user`,
    )
  return { uid: found.uid, gid: found.gid }
}
