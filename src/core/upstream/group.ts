/*
 * An upstream group: several servers of one kind (php-fpm pools, uWSGI servers, HTTP
 * servers) behind one name, as nginx's `upstream { server ...; }` block. The group knows
 * nothing of protocols: a gateway acquires a server, talks to it with its own client, and
 * reports how it went; the group balances (smooth weighted round robin or weighted least
 * connections), caps each server's connections (max_conns), takes a failing server out of
 * rotation (max_fails within fail_timeout, then one trial request) and runs the gateway's
 * active health probe. The user's view is docs/configuration.md (Upstream groups);
 * a gateway's use of it is sketched in src/core/upstream/index.ts.
 */
import type { Logger } from 'pino'
import { GatehouseError } from '../errors.js'

export type Balance = 'round_robin' | 'least_conn'

/** The responses and errors after which a request may go to the next server (nginx proxy_next_upstream). */
export type NextUpstream = 'error' | 'timeout' | 'http_502' | 'http_503' | 'http_504'

export interface UpstreamServerSpec {
  /** `unix:/path`, `host:port`, `[v6]:port`: what the gateway's client connects to. */
  address: string
  /** Share of requests against the other servers (default 1). */
  weight: number
  /** Failures within fail_timeout that take the server out (0: never; default 1, as nginx). */
  max_fails: number
  /** Milliseconds: the window in which failures count, and how long the server stays out (default 10 s). */
  fail_timeout: number
  /** Requests in flight at most on this server (0: no cap). */
  max_conns: number
  /** Used only while no primary server can take the request. */
  backup: boolean
}

export interface HealthCheckSpec {
  /** Milliseconds between two probes of a server. */
  interval: number
  /** Milliseconds a probe may take; longer is a failure. */
  timeout: number
  /** Consecutive passing probes that bring a server marked down by probes back. */
  passes: number
  /** Consecutive failing probes that mark a server down. */
  fails: number
  /** What the gateway's probe requests (a script, a path); gateway-specific, undefined: its default probe. */
  path?: string | undefined
  /** Reply statuses that pass; empty: any status from 200 to 399. */
  status: number[]
}

export interface UpstreamGroupSpec {
  /** The `[upstreams.NAME]` name, or a made-up one for a list given in place (`fastcgi = [..]`). */
  name: string
  servers: UpstreamServerSpec[]
  balance: Balance
  /** Servers a request may be tried on at most; 0: each server once (nginx proxy_next_upstream_tries 0). */
  tries: number
  /** Milliseconds after the first try past which no further try starts; 0: no limit. */
  try_timeout: number
  /** When a request goes to the next server; `error` and `timeout` always count as failures. */
  next_upstream: NextUpstream[]
  health?: HealthCheckSpec | undefined
}

/** A server's state as the status page shows it. */
export type ServerState = 'up' | 'down' | 'checking'

/**
 * The gateway's active health probe of one server: resolves when it passes, rejects (with
 * the reason, for the status page) when it fails. `signal` aborts when the probe's timeout
 * is reached; the group counts the probe failed then, whether or not it settles.
 */
export type HealthProbe = (server: UpstreamServer, signal: AbortSignal) => Promise<void>

/** How a request on a server ended, for passive health. */
export type Outcome = 'success' | 'failure' | 'neutral'

export interface UpstreamServerStats {
  address: string
  weight: number
  backup: boolean
  max_conns: number
  state: ServerState
  /** Requests in flight. */
  active: number
  /** Requests given to the server since the group was made. */
  requests: number
  /** Of those, the ones that failed (connect error, timeout, a next_upstream status). */
  failures: number
  /** Probes run and failed (active health checks). */
  checks: number
  check_failures: number
  /** Why the server went down last (an error message), if it did. */
  last_error?: string
}

export interface UpstreamGroupStats {
  name: string
  balance: Balance
  servers: UpstreamServerStats[]
}

export class UpstreamServer {
  readonly address: string
  readonly weight: number
  readonly backup: boolean
  readonly maxConns: number
  readonly maxFails: number
  readonly failTimeout: number
  /** The position in the group's list. */
  readonly index: number
  active = 0
  requests = 0
  failures = 0
  checks = 0
  checkFailures = 0
  lastError: string | undefined
  /** Smooth weighted round robin's running weight. */
  current = 0
  /** Failures counted in the window that started at windowStart. */
  fails = 0
  windowStart = 0
  /** Out of rotation until then (passive health). */
  downUntil = 0
  /** A trial request after fail_timeout is in flight: no other goes until it ends. */
  trial = false
  /** Active checks hold it down until `passes` probes pass. */
  probeDown = false
  probePasses = 0
  probeFails = 0

  constructor(spec: UpstreamServerSpec, index: number) {
    this.address = spec.address
    this.weight = spec.weight
    this.backup = spec.backup
    this.maxConns = spec.max_conns
    this.maxFails = spec.max_fails
    this.failTimeout = spec.fail_timeout
    this.index = index
  }

  /** Passively failed: max_fails reached (it is out until downUntil, then has one trial). */
  get failed(): boolean {
    return this.maxFails > 0 && this.fails >= this.maxFails
  }

  state(now: number): ServerState {
    if (this.probeDown) return 'down'
    if (this.trial) return 'checking'
    if (this.failed) return now < this.downUntil ? 'down' : 'checking'
    return 'up'
  }

  stats(now: number): UpstreamServerStats {
    return {
      address: this.address,
      weight: this.weight,
      backup: this.backup,
      max_conns: this.maxConns,
      state: this.state(now),
      active: this.active,
      requests: this.requests,
      failures: this.failures,
      checks: this.checks,
      check_failures: this.checkFailures,
      ...(this.lastError !== undefined ? { last_error: this.lastError } : {}),
    }
  }
}

/** A server taken for one request: release it exactly once, when the response is over. */
export interface UpstreamLease {
  readonly server: UpstreamServer
  /** This request is the one trial of a server that was down. */
  readonly trial: boolean
  /** The outcome release() reports when given none (the retry helper sets 'failure' for a next_upstream status). */
  outcome: Outcome
  /** Give the server back; `outcome` (default: the lease's `outcome`, 'success') feeds passive health. Later calls do nothing. */
  release(outcome?: Outcome): void
}

export interface UpstreamGroupOptions {
  log?: Logger | undefined
  /** The clock (milliseconds), for tests. */
  now?: () => number
}

/**
 * The group answers GH_ERR_UPSTREAM_DOWN (502) when every server it could use is down,
 * and GH_ERR_UPSTREAM_BUSY (503) when some are up but all of those are at max_conns.
 */
export class UpstreamGroup {
  readonly name: string
  readonly spec: UpstreamGroupSpec
  readonly servers: readonly UpstreamServer[]
  private readonly primaries: UpstreamServer[]
  private readonly backups: UpstreamServer[]
  /** nginx's rule: the only server of a group is never marked down by failures (nothing else to try). */
  private readonly passive: boolean
  private readonly now: () => number
  private readonly log: Logger | undefined
  private probe: HealthProbe | undefined
  private timers = new Map<UpstreamServer, NodeJS.Timeout>()
  private probing = new Set<UpstreamServer>()
  private closed = false

  constructor(spec: UpstreamGroupSpec, options: UpstreamGroupOptions = {}) {
    if (spec.servers.length === 0) throw new Error(`upstream group ${spec.name} has no server`)
    this.name = spec.name
    this.spec = spec
    this.servers = spec.servers.map((s, i) => new UpstreamServer(s, i))
    this.primaries = this.servers.filter((s) => !s.backup)
    this.backups = this.servers.filter((s) => s.backup)
    this.passive = this.servers.length > 1
    this.now = options.now ?? Date.now
    this.log = options.log
  }

  /** Tries a request may have: `tries`, or every server once. */
  get maxTries(): number {
    return this.spec.tries > 0 ? this.spec.tries : this.servers.length
  }

  /**
   * Take a server for one request, skipping those in `exclude` (the ones a retried request
   * already tried). Throws GH_ERR_UPSTREAM_DOWN (502) or GH_ERR_UPSTREAM_BUSY (503) when no
   * server can take it.
   */
  acquire(exclude?: ReadonlySet<UpstreamServer>): UpstreamLease {
    const now = this.now()
    const server = this.pick(this.primaries, exclude, now) ?? this.pick(this.backups, exclude, now)
    if (!server) throw this.unavailable(exclude, now)
    const trial = this.passive && server.failed
    if (trial) server.trial = true
    server.active++
    server.requests++
    return this.lease(server, trial)
  }

  /** Per server: can it take a request now (up, or due its trial), and is it under max_conns. */
  private usable(s: UpstreamServer, now: number): boolean {
    if (s.probeDown) return false
    if (this.passive && s.failed && (s.trial || now < s.downUntil)) return false
    return s.maxConns === 0 || s.active < s.maxConns
  }

  private pick(
    servers: readonly UpstreamServer[],
    exclude: ReadonlySet<UpstreamServer> | undefined,
    now: number,
  ): UpstreamServer | undefined {
    let candidates: UpstreamServer[] = []
    for (const s of servers) if (!exclude?.has(s) && this.usable(s, now)) candidates.push(s)
    if (candidates.length === 0) return undefined
    if (this.spec.balance === 'least_conn' && candidates.length > 1) {
      // Fewest requests in flight per unit of weight (a * wb < b * wa, no division); ties go round robin.
      let best = candidates[0]!
      let tied: UpstreamServer[] = [best]
      for (let i = 1; i < candidates.length; i++) {
        const s = candidates[i]!
        const lhs = s.active * best.weight
        const rhs = best.active * s.weight
        if (lhs < rhs) {
          best = s
          tied = [s]
        } else if (lhs === rhs) tied.push(s)
      }
      candidates = tied
    }
    return smoothWeighted(candidates)
  }

  private unavailable(exclude: ReadonlySet<UpstreamServer> | undefined, now: number): GatehouseError {
    const open = this.servers.filter((s) => !exclude?.has(s))
    const alive = open.filter((s) => !s.probeDown && !(this.passive && s.failed && now < s.downUntil))
    if (alive.length > 0 && alive.every((s) => s.maxConns > 0 && s.active >= s.maxConns))
      return new GatehouseError(
        'GH_ERR_UPSTREAM_BUSY',
        `upstream ${this.name}: every server that is up has max_conns requests in flight`,
        { retryAfter: 1 },
      )
    return new GatehouseError('GH_ERR_UPSTREAM_DOWN', `upstream ${this.name}: no server is up`)
  }

  private lease(server: UpstreamServer, trial: boolean): UpstreamLease {
    let released = false
    const lease: UpstreamLease = {
      server,
      trial,
      outcome: 'success',
      release: (outcome?: Outcome) => {
        if (released) return
        released = true
        server.active--
        this.report(server, outcome ?? lease.outcome, trial)
      },
    }
    return lease
  }

  private report(server: UpstreamServer, outcome: Outcome, trial: boolean): void {
    if (trial) server.trial = false
    if (outcome === 'neutral') return
    const now = this.now()
    if (outcome === 'success') {
      // The trial went through: the server is back (nginx resets its fails on such a success).
      if (trial && server.failed) {
        server.fails = 0
        server.downUntil = 0
        this.log?.info({ upstream: this.name, server: server.address }, 'upstream server is up again')
      }
      return
    }
    server.failures++
    if (!this.passive || server.maxFails === 0) return
    if (trial) {
      server.downUntil = now + server.failTimeout
      return
    }
    if (now - server.windowStart > server.failTimeout || server.fails === 0) {
      server.windowStart = now
      server.fails = 0
    }
    server.fails++
    if (server.fails === server.maxFails) {
      server.downUntil = now + server.failTimeout
      this.log?.warn(
        { upstream: this.name, server: server.address, fails: server.fails },
        'upstream server marked down (max_fails reached)',
      )
    }
  }

  /** Note why a server failed, for the status page (the gateway calls it with the error). */
  noteError(server: UpstreamServer, err: unknown): void {
    server.lastError = err instanceof Error ? err.message : String(err)
  }

  /**
   * Start the active health checks with the gateway's probe (nothing happens without a
   * `health` table). Each server is probed every `interval`, the first time at once.
   */
  startHealthChecks(probe: HealthProbe): void {
    if (!this.spec.health || this.closed || this.probe) return
    this.probe = probe
    for (const s of this.servers) this.schedule(s, 0)
  }

  /** Probe every server once now (tests; the control API could too). Resolves when all are done. */
  async checkNow(): Promise<void> {
    await Promise.all(this.servers.map((s) => this.check(s)))
  }

  private schedule(server: UpstreamServer, delay: number): void {
    if (this.closed) return
    const timer = setTimeout(() => {
      this.timers.delete(server)
      void this.check(server).finally(() => this.schedule(server, this.spec.health!.interval))
    }, delay)
    timer.unref()
    this.timers.set(server, timer)
  }

  private async check(server: UpstreamServer): Promise<void> {
    const health = this.spec.health
    const probe = this.probe
    if (!health || !probe || this.probing.has(server)) return
    this.probing.add(server)
    const controller = new AbortController()
    let timer: NodeJS.Timeout | undefined
    const timedOut = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        const err = new Error(`health check timed out after ${health.timeout} ms`)
        controller.abort(err)
        reject(err)
      }, health.timeout)
    })
    server.checks++
    try {
      await Promise.race([probe(server, controller.signal), timedOut])
      server.probeFails = 0
      server.probePasses++
      if (server.probeDown && server.probePasses >= health.passes) {
        server.probeDown = false
        // A server the probes see up again is up for requests too.
        server.fails = 0
        server.downUntil = 0
        this.log?.info(
          { upstream: this.name, server: server.address },
          'upstream server passed its health checks',
        )
      }
    } catch (err) {
      server.checkFailures++
      server.probePasses = 0
      server.probeFails++
      this.noteError(server, err)
      if (!server.probeDown && server.probeFails >= health.fails) {
        server.probeDown = true
        this.log?.warn(
          { upstream: this.name, server: server.address, err: server.lastError },
          'upstream server failed its health checks: marked down',
        )
      }
    } finally {
      clearTimeout(timer)
      this.probing.delete(server)
    }
  }

  stats(): UpstreamGroupStats {
    const now = this.now()
    return { name: this.name, balance: this.spec.balance, servers: this.servers.map((s) => s.stats(now)) }
  }

  /** Stop the health checks (requests in flight release their leases as usual). */
  close(): void {
    this.closed = true
    for (const timer of this.timers.values()) clearTimeout(timer)
    this.timers.clear()
  }
}

/**
 * nginx's smooth weighted round robin (ngx_http_upstream_get_peer): each pick adds every
 * candidate's weight to its running weight, takes the highest, and takes the total off it.
 * Weights 5,1,1 give a a b a c a a, not a a a a a b c.
 */
function smoothWeighted(candidates: readonly UpstreamServer[]): UpstreamServer {
  if (candidates.length === 1) return candidates[0]!
  let best: UpstreamServer | undefined
  let total = 0
  for (const s of candidates) {
    s.current += s.weight
    total += s.weight
    if (!best || s.current > best.current) best = s
  }
  best!.current -= total
  return best!
}
