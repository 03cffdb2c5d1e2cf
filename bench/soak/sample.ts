/*
 * What the soak harness measures of a running server, from /proc: the resident memory
 * (VmRSS) and the open file descriptors (entries of /proc/PID/fd) of the Node process and of
 * every process under it (its workers) and under a backend (php-fpm, uWSGI).
 */
import { readdirSync, readFileSync } from 'node:fs'
import { processTree } from '../processes.js'

export interface ProcessSample {
  pid: number
  /** The command name (/proc/PID/comm). */
  comm: string
  rssBytes: number
  fds: number
}

export interface Snapshot {
  /** ms since the soak of this gateway started. */
  atMs: number
  /** Requests completed before the load slice during which (or after which) it was taken. */
  requests: number
  /** 'before' (after warm-up, idle), 'during' (between two wrk slices), 'after' (idle). */
  phase: 'before' | 'during' | 'after'
  node: ProcessSample
  /** Every process under the Node process (pool workers, the CGI fork server, ...). */
  workers: ProcessSample[]
  /** Every process of the backend (php-fpm, uWSGI), when there is one. */
  backend: ProcessSample[]
}

function readProcess(pid: number): ProcessSample | undefined {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'latin1')
    const rss = /^VmRSS:\s+(\d+)\s+kB/m.exec(status)
    const comm = readFileSync(`/proc/${pid}/comm`, 'latin1').trim()
    const fds = readdirSync(`/proc/${pid}/fd`).length
    // A zombie has no VmRSS line and no fds: it is not a live worker.
    if (!rss) return undefined
    return { pid, comm, rssBytes: Number(rss[1]) * 1024, fds }
  } catch {
    return undefined // exited while we looked
  }
}

/** The Node process, every live process under it, and every live process of the backend. */
export function snapshot(
  nodePid: number,
  backendPid: number | undefined,
  info: Pick<Snapshot, 'atMs' | 'requests' | 'phase'>,
): Snapshot {
  const node = readProcess(nodePid)
  if (!node) throw new Error(`the server (pid ${nodePid}) is gone`)
  const under = processTree([nodePid]).filter((p) => p !== nodePid)
  const backend = backendPid === undefined ? [] : processTree([backendPid])
  return {
    ...info,
    node,
    workers: under.map(readProcess).filter((p): p is ProcessSample => p !== undefined),
    backend: backend.map(readProcess).filter((p): p is ProcessSample => p !== undefined),
  }
}

export const sum = (xs: readonly ProcessSample[], key: 'rssBytes' | 'fds'): number =>
  xs.reduce((a, p) => a + p[key], 0)
