/*
 * The live groups of this process, shared by name: two routes naming `[upstreams.php]`
 * use one group (one set of counters, one health state, one round robin), and a reload that
 * leaves a group's table as it was keeps its state (the new handlers take the group before
 * the old ones let it go). A group whose table changed is a new group: its health state
 * starts over (every server up). The status page and the metrics read the list from here.
 */
import type { Logger } from 'pino'
import { type HealthProbe, UpstreamGroup, type UpstreamGroupSpec, type UpstreamGroupStats } from './group.js'

interface Entry {
  group: UpstreamGroup
  users: number
  key: string
}

const live = new Map<string, Entry>()

/**
 * Take the group for `spec` (made on first use), and start its health checks with `probe`
 * (the first user's probe; later ones are not used). Give it back with releaseGroup().
 */
export function takeGroup(spec: UpstreamGroupSpec, probe?: HealthProbe, log?: Logger): UpstreamGroup {
  const key = JSON.stringify(spec)
  let entry = live.get(key)
  if (!entry) {
    entry = { group: new UpstreamGroup(spec, { log }), users: 0, key }
    live.set(key, entry)
  }
  entry.users++
  if (probe) entry.group.startHealthChecks(probe)
  return entry.group
}

/** Give back a group taken with takeGroup(); the last user closes it (its health checks stop). */
export function releaseGroup(group: UpstreamGroup): void {
  for (const entry of live.values()) {
    if (entry.group !== group) continue
    if (--entry.users === 0) {
      live.delete(entry.key)
      group.close()
    }
    return
  }
}

/** The groups in use, in the order they were first taken. */
export function liveGroups(): UpstreamGroup[] {
  return [...live.values()].map((e) => e.group)
}

/**
 * The figures of the groups in use, one per name: after a reload that changed a group, the
 * old group lives on while the old handlers drain, and the new one is shown.
 */
export function upstreamStats(): UpstreamGroupStats[] {
  const byName = new Map<string, UpstreamGroupStats>()
  for (const g of liveGroups()) byName.set(g.name, g.stats())
  return [...byName.values()]
}
