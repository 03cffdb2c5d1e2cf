/*
 * The process table from /proc, for tests that count a server's workers and check that
 * nothing it started is left (as test/process/chaos.test.ts does).
 */
import { readdirSync, readFileSync } from 'node:fs'

export interface Proc {
  pid: number
  ppid: number
  state: string
  comm: string
}

export function processTable(): Map<number, Proc> {
  const table = new Map<number, Proc>()
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'latin1')
      const close = stat.lastIndexOf(')')
      const [state, ppid] = stat.slice(close + 2).split(' ')
      table.set(Number(name), {
        pid: Number(name),
        ppid: Number(ppid),
        state: state!,
        comm: stat.slice(stat.indexOf('(') + 1, close),
      })
    } catch {
      // gone between readdir and read
    }
  }
  return table
}

/** Every process under `root` (children, grandchildren...), zombies included. */
export function descendants(root: number): Proc[] {
  const table = processTable()
  const out: Proc[] = []
  const walk = (pid: number) => {
    for (const p of table.values()) {
      if (p.ppid !== pid) continue
      out.push(p)
      walk(p.pid)
    }
  }
  walk(root)
  return out
}

/** Alive and not a zombie. */
export function running(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'latin1')
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z'
  } catch {
    return false
  }
}

/** A pool worker's kind: `php` (php-cgi), `wsgi` or `asgi` (a Python worker), or undefined. */
export function workerKind(p: Proc): 'php' | 'wsgi' | 'asgi' | undefined {
  if (p.comm === 'php-cgi') return 'php'
  try {
    const args = readFileSync(`/proc/${p.pid}/cmdline`, 'latin1').split('\0')
    if (!args.includes('gatehouse_worker')) return undefined
    if (args.includes('--wsgi')) return 'wsgi'
    if (args.includes('--asgi')) return 'asgi'
  } catch {
    // gone
  }
  return undefined
}

/** The live (not zombie) workers of each kind directly under `server` (its children). */
export function liveWorkers(server: number): Record<'php' | 'wsgi' | 'asgi', number[]> {
  const out = { php: [] as number[], wsgi: [] as number[], asgi: [] as number[] }
  for (const p of descendants(server)) {
    if (p.ppid !== server || p.state === 'Z') continue
    const kind = workerKind(p)
    if (kind) out[kind].push(p.pid)
  }
  return out
}
