/*
 * Private directories for the sockets of one Gatehouse process (worker sockets, the CGI
 * fork server's), named after its pid so that a later start can tell which ones a dead
 * Gatehouse left behind (SIGKILL, the OOM killer: no exit hook ran) and remove them.
 */
import { chownSync, mkdtempSync, readdirSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { type Identity, ownForChildren } from './identity.js'

const swept = new Set<string>()

/** true unless `pid` is certainly gone (a pid in use by someone else counts as alive). */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    return (err as NodeJS.ErrnoException).code !== 'ESRCH'
  }
}

/**
 * Remove `<tmpdir>/<prefix><pid>-*` directories whose Gatehouse process is gone. Their
 * workers are gone too (each was started with a parent-death signal, see spawn.ts), so
 * only files are left. Returns what was removed.
 */
export function removeLeftRunDirs(prefix: string, dir = tmpdir()): string[] {
  const removed: string[] = []
  let names: string[]
  try {
    names = readdirSync(dir)
  } catch {
    return removed
  }
  for (const name of names) {
    if (!name.startsWith(prefix)) continue
    const m = /^(\d+)-/.exec(name.slice(prefix.length))
    if (!m) continue
    const pid = Number(m[1])
    if (pid === process.pid || alive(pid)) continue
    try {
      rmSync(join(dir, name), { recursive: true, force: true })
    } catch {
      // Not ours to remove (left by a server running as another user, e.g. root before
      // --user): it stays, and our own directory is made beside it.
      continue
    }
    removed.push(name)
  }
  return removed
}

/**
 * A new private directory `<tmpdir>/<prefix><our pid>-XXXXXX`; the first call for a prefix
 * also removes what dead Gatehouse processes left under it.
 */
export function makeRunDir(prefix: string, owner?: Identity): string {
  if (!swept.has(prefix)) {
    swept.add(prefix)
    removeLeftRunDirs(prefix)
  }
  const dir = mkdtempSync(join(tmpdir(), `${prefix}${process.pid}-`))
  if (owner) chownSync(dir, owner.uid, owner.gid)
  else ownForChildren(dir)
  return dir
}
