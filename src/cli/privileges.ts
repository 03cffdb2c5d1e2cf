/*
 * `user`, `group` and `umask` for `gatehouse serve` (issue 17, "Running as a service"), as
 * nginx and gunicorn do them: started as root, the server binds its listeners (ports below
 * 1024) and then becomes `user`; its children (workers, the CGI fork server, CGI scripts)
 * are started as `user` from the beginning (process/identity.ts), so no request is ever
 * served by root code. Names are looked up with `getent` (process/identity.ts).
 */
import type { Logger } from 'pino'
import { type Identity, lookupIdentity, setChildIdentity } from '../process/identity.js'

export interface RunAs extends Identity {
  user: string
}

/**
 * What `user` and `group` name, checked against who we are: an error message when they
 * cannot be used (no such user; not root and asked to become someone else).
 */
export function resolveRunAs(user: string | number, group: string | number | undefined): RunAs | string {
  const found = lookupIdentity(user, group)
  if (typeof found === 'string') return found
  const self = process.getuid!()
  if (self !== 0 && (found.uid !== self || found.gid !== process.getgid!()))
    return `user = ${JSON.stringify(user)}: only a server started as root can become another user (running as uid ${self})`
  return found
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
