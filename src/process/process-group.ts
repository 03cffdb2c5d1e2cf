/**
 * Signalling a whole process group. A gateway starts each child as the leader of its own
 * group (`spawn(..., { detached: true })` calls setsid), so whatever the child starts stays
 * reachable through `-pid` even after the leader has exited.
 */

/** Send a signal to every process in the group led by `pid`; false when the group is gone. */
export function signalGroup(pid: number, signal: NodeJS.Signals | 0): boolean {
  try {
    process.kill(-pid, signal)
    return true
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    if (code === 'ESRCH') return false
    // EPERM: a member changed its credentials (setuid); nothing more we can do to it.
    if (code === 'EPERM') return false
    throw err
  }
}

/** true while any process is left in the group. */
export function groupAlive(pid: number): boolean {
  return signalGroup(pid, 0)
}

/**
 * SIGTERM the group, then SIGKILL whatever is left after `graceMs`. Resolves once the
 * group is empty (checked when the grace period ends, or earlier through `leaderExited`).
 *
 * Linux never hands out a PID that is still some process group's ID, so signalling `-pid`
 * is safe while a member lives; once the group is empty the timer is cancelled.
 */
export function terminateGroup(pid: number, graceMs: number, leaderExited: Promise<unknown>): Promise<void> {
  if (!signalGroup(pid, 'SIGTERM')) return Promise.resolve()
  return new Promise((resolve) => {
    let done = false
    let poll: NodeJS.Timeout | undefined
    const finish = () => {
      if (done) return
      done = true
      clearTimeout(timer)
      clearInterval(poll)
      resolve()
    }
    const timer = setTimeout(() => {
      signalGroup(pid, 'SIGKILL')
      finish()
    }, graceMs)
    // Members other than the leader are not our children: no exit event tells us they are
    // gone, so look every so often once the leader has exited.
    void leaderExited.then(() => {
      if (done) return
      if (!groupAlive(pid)) return finish()
      poll = setInterval(() => {
        if (!groupAlive(pid)) finish()
      }, 50)
    })
  })
}
