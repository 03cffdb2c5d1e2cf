/*
 * A second descriptor for a listening socket, for a front thread to listen on.
 *
 * Threads share the process's descriptors: had every front listened on the main thread's
 * own descriptor, the first to close it (a front replaced, a listener removed by a reload)
 * would have closed the socket for all, and a later close could hit a descriptor number
 * reused by then. Each front gets its own descriptor of the same socket, closed by it alone.
 * Node 20 has neither dup(2) nor SO_REUSEPORT in `net`; what it has is its IPC channel,
 * which passes handles with SCM_RIGHTS: a short-lived child (copy-child.ts) is sent each
 * listening handle and sends it back, and what comes back is a new descriptor. Written by
 * hand: no library does this.
 */
import { fork } from 'node:child_process'
import { fileURLToPath } from 'node:url'

/**
 * The handles that came back: kept here, never closed by this thread (the descriptor is the
 * front's to close) and never collected.
 */
const held: unknown[] = []

/** One new descriptor per handle (a net.Server's `_handle`), in order. */
export async function copyDescriptors(handles: readonly unknown[]): Promise<number[]> {
  if (handles.length === 0) return []
  const child = fork(fileURLToPath(new URL('./copy-child.js', import.meta.url)), [], {
    stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
    env: {},
    execArgv: [],
  })
  const fds: number[] = []
  try {
    await new Promise<void>((resolve, reject) => {
      child.on('message', (_m: unknown, handle: unknown) => {
        held.push(handle)
        fds.push((handle as { fd: number }).fd)
        if (fds.length === handles.length) resolve()
      })
      child.once('error', reject)
      child.once('exit', (code) => {
        if (fds.length < handles.length) reject(new Error(`the descriptor-copying child exited (${code})`))
      })
      // One at a time: the order of the copies is the order of the handles.
      const sendNext = (i: number): void => {
        if (i < handles.length) child.send({ copy: i }, handles[i] as never, () => sendNext(i + 1))
      }
      sendNext(0)
    })
  } finally {
    if (child.connected) child.disconnect()
  }
  return fds
}
