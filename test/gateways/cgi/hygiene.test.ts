/**
 * Process hygiene: after 1,000 CGI requests, including timeouts, scripts that ignore
 * SIGTERM, scripts with background children, crashes and clients that disconnect, no
 * process of ours remains — no child of this (the server's) process or of its CGI fork server,
 * running or zombie, and nothing anywhere that carries this run's marker in its environment;
 * and once the handler is closed, not the fork server either.
 */
import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { readdirSync, readFileSync } from 'node:fs'
import { createServer } from 'node:http'
import { connect } from 'node:net'
import { join } from 'node:path'
import { test } from 'node:test'
import pino from 'pino'
import { cgi } from '../../../src/gateways/cgi/action.js'
import { eventually, fetchText } from '../../support/cgi-client.js'
import { FIXTURES } from '../../support/helpers.js'

const CGI = join(FIXTURES, 'cgi')

/** PIDs whose parent is `parent` (zombies included: they stay in /proc until reaped). */
function childrenOf(parent: number): string[] {
  const out: string[] = []
  for (const pid of readdirSync('/proc')) {
    if (!/^\d+$/.test(pid)) continue
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
      // pid (comm) state ppid ...; comm may contain spaces and parentheses.
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
      if (Number(fields[1]) === parent)
        out.push(`${pid} ${stat.slice(0, stat.lastIndexOf(')') + 1)} ${fields[0]}`)
    } catch {
      // gone meanwhile
    }
  }
  return out
}

/** The CGI fork server(s) among our children: long-lived on purpose, while the handler is open. */
function forkServers(): number[] {
  return childrenOf(process.pid)
    .map((line) => Number(line.split(' ')[0]))
    .filter((pid) => {
      try {
        return readFileSync(`/proc/${pid}/cmdline`, 'latin1').includes('gatehouse_spawn/forkserver.py')
      } catch {
        return false
      }
    })
}

/** Children of this process and of its fork server, except the fork server itself. */
function childrenOfThisProcess(): string[] {
  const helpers = forkServers()
  return [
    ...childrenOf(process.pid).filter((line) => !helpers.includes(Number(line.split(' ')[0]))),
    ...helpers.flatMap((pid) => childrenOf(pid)),
  ]
}

/** Processes anywhere whose environment holds `marker` (grandchildren re-parented to init too). */
function processesWithMarker(marker: string): string[] {
  const out: string[] = []
  for (const pid of readdirSync('/proc')) {
    if (!/^\d+$/.test(pid) || Number(pid) === process.pid) continue
    try {
      if (readFileSync(`/proc/${pid}/environ`).includes(marker)) out.push(pid)
    } catch {
      // gone, or not ours to read
    }
  }
  return out
}

/** Send a request and hang up: after `afterBytes` of response (0 = before any), or after `ms`. */
function disconnecting(
  port: number,
  path: string,
  when: { afterBytes?: number; ms?: number },
): Promise<void> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1')
    let got = 0
    socket.on('error', () => resolve())
    socket.on('close', () => resolve())
    socket.on('data', (c: Buffer) => {
      got += c.length
      if (when.afterBytes !== undefined && got >= when.afterBytes) socket.destroy()
    })
    socket.write(`GET ${path} HTTP/1.1\r\nHost: x\r\n\r\n`)
    if (when.ms !== undefined) setTimeout(() => socket.destroy(), when.ms)
  })
}

test(
  'after 1,000 requests with timeouts, disconnects and crashes, no CGI process remains',
  {
    timeout: 180_000,
  },
  async (t) => {
    const marker = `GH_HYGIENE_${randomUUID().replaceAll('-', '')}`
    let closed = false
    const listener = cgi({
      root: CGI,
      log: pino({ level: 'silent' }),
      env: { GH_MARKER: marker, BIG_BYTES: String(64 * 1024 * 1024) },
      timeout: '400ms',
      kill_grace: '200ms',
      max_processes: 16,
      queue: 2000,
      queue_timeout: '120s',
    })
    const server = createServer(listener)
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
    t.after(async () => {
      if (closed) return
      server.closeAllConnections()
      await listener.close()
      await new Promise((r) => server.close(r))
    })
    const { port } = server.address() as { port: number }

    type Kind = 'ok' | 'timeout' | 'stubborn' | 'crash' | 'cut-body' | 'cut-early' | 'partial'
    const plan: Kind[] = []
    const add = (kind: Kind, n: number) => {
      for (let i = 0; i < n; i++) plan.push(kind)
    }
    add('ok', 820)
    add('timeout', 40) // sleep.sh: no head, a background child in its group -> 504
    add('stubborn', 15) // ignores SIGTERM -> SIGKILL after kill_grace
    add('crash', 30) // SIGSEGV before any output -> 502
    add('cut-body', 40) // client hangs up in the middle of a 64 MiB body
    add('cut-early', 35) // client hangs up before the script answered
    add('partial', 20) // head sent, then the timeout cuts the body
    // Shuffle (seeded, so every run is the same) so that every kind overlaps with the others.
    let seed = 12345
    for (let i = plan.length - 1; i > 0; i--) {
      seed = (seed * 1103515245 + 12345) % 2 ** 31
      const j = seed % (i + 1)
      ;[plan[i], plan[j]] = [plan[j]!, plan[i]!]
    }
    assert.equal(plan.length, 1000)

    const counts: Record<string, number> = {}
    const note = (key: string) => {
      counts[key] = (counts[key] ?? 0) + 1
    }
    const one = async (kind: Kind) => {
      switch (kind) {
        case 'ok': {
          const r = await fetchText(port, '/env.sh')
          note(`ok:${r.status}`)
          assert.ok(r.text.includes(marker))
          return
        }
        case 'timeout':
          note(`timeout:${(await fetchText(port, '/sleep.sh')).status}`)
          return
        case 'crash':
          note(`crash:${(await fetchText(port, '/crash.sh')).status}`)
          return
        case 'stubborn':
        case 'partial':
          await fetchText(port, kind === 'stubborn' ? '/stubborn.sh' : '/slow-body.sh').then(
            (r) => note(`${kind}:completed:${r.status}`),
            () => note(`${kind}:cut`),
          )
          return
        case 'cut-body':
          await disconnecting(port, '/big.sh', { afterBytes: 256 * 1024 })
          note(kind)
          return
        case 'cut-early':
          await disconnecting(port, '/sleep.sh', { ms: 50 })
          note(kind)
          return
      }
    }
    let next = 0
    const worker = async () => {
      while (next < plan.length) await one(plan[next++]!)
    }
    await Promise.all(Array.from({ length: 32 }, worker))

    assert.deepEqual(counts, {
      'ok:200': 820,
      'timeout:504': 40,
      'stubborn:cut': 15,
      'crash:502': 30,
      'cut-body': 40,
      'cut-early': 35,
      'partial:cut': 20,
    })
    assert.ok(
      await eventually(() => listener.stats().running === 0 && listener.stats().queued === 0, 20_000),
      JSON.stringify(listener.stats()),
    )
    assert.ok(
      await eventually(() => childrenOfThisProcess().length === 0, 10_000),
      childrenOfThisProcess().join('\n'),
    )
    assert.ok(
      await eventually(() => processesWithMarker(marker).length === 0, 10_000),
      `still running: ${processesWithMarker(marker).join(' ')}`,
    )
    // Closing the handler stops its fork server too: then nothing at all is left.
    assert.equal(forkServers().length, 1, 'scripts ran through the fork server')
    closed = true
    server.closeAllConnections()
    await listener.close()
    await new Promise((r) => server.close(r))
    assert.ok(
      await eventually(() => childrenOf(process.pid).length === 0, 10_000),
      childrenOf(process.pid).join('\n'),
    )
  },
)
