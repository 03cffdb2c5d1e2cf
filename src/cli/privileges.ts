/*
 * `user`, `group` and `umask` for `gatehouse serve` (issue 17, "Running as a service"), as
 * nginx and gunicorn do them: started as root, the server binds its listeners (ports below
 * 1024) and then becomes `user`; its children (workers, the CGI fork server, CGI scripts)
 * are started as `user` from the beginning (process/identity.ts), so no request is ever
 * served by root code. Names are looked up with `getent` (the system's NSS: /etc/passwd,
 * LDAP, ...), which Node has no call for.
 */
import { execFileSync } from 'node:child_process'
import type { Logger } from 'pino'
import { type Identity, setChildIdentity } from '../process/identity.js'

export interface RunAs extends Identity {
  user: string
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
 * What `user` and `group` name, checked against who we are: an error message when they
 * cannot be used (no such user; not root and asked to become someone else).
 */
export function resolveRunAs(user: string | number, group: string | number | undefined): RunAs | string {
  const pw = lookup('passwd', user)
  if (!pw) return `user = ${JSON.stringify(user)}: no such user`
  const uid = Number(pw[2])
  let gid = Number(pw[3])
  if (group !== undefined) {
    const gr = lookup('group', group)
    if (!gr) return `group = ${JSON.stringify(group)}: no such group`
    gid = Number(gr[2])
  }
  const self = process.getuid!()
  if (self !== 0 && (uid !== self || gid !== process.getgid!()))
    return `user = ${JSON.stringify(user)}: only a server started as root can become another user (running as uid ${self})`
  return { user: pw[0]!, uid, gid }
}

/** Before anything is started: the umask, and the identity every child is spawned with. */
export function prepare(runAs: RunAs | null, umask: string | undefined): void {
  if (umask !== undefined) process.umask(parseInt(umask, 8))
  if (runAs && process.getuid!() === 0) setChildIdentity(runAs)
}

/** Once the listeners are bound: become `runAs` (supplementary groups, group, then user). */
export function dropPrivileges(runAs: RunAs | null, log: Logger): void {
  if (!runAs || process.getuid!() !== 0) return
  // initgroups(3): the user's supplementary groups (Node has it; @types/node lacks it).
  ;(process as unknown as { initgroups(user: string, extra: number): void }).initgroups(runAs.user, runAs.gid)
  process.setgid!(runAs.gid)
  process.setuid!(runAs.uid)
  log.info({ user: runAs.user, uid: runAs.uid, gid: runAs.gid }, `running as ${runAs.user}`)
}
