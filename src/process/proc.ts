/*
 * What /proc tells of a worker: its resident memory, for max_rss and the status page.
 */
import { readFileSync } from 'node:fs'
import { readFile } from 'node:fs/promises'

/** VmRSS of a process in bytes (0 when it is gone or /proc is not there). */
export async function readRss(pid: number): Promise<number> {
  try {
    return parseRss(await readFile(`/proc/${pid}/status`, 'latin1'))
  } catch {
    return 0
  }
}

/** The same, read synchronously (the status page), 0 for no pid. */
export function rssOf(pid: number): number {
  if (pid <= 0) return 0
  try {
    return parseRss(readFileSync(`/proc/${pid}/status`, 'latin1'))
  } catch {
    return 0
  }
}

function parseRss(status: string): number {
  const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(status)
  return m ? Number(m[1]) * 1024 : 0
}
