/*
 * Automatic certificates (ACME, RFC 8555), as Caddy does them: for every host named by a
 * `tls = { acme = [...] }` listener, a certificate is read from storage at start, or
 * ordered in the background; the expiry is checked every `check_interval` and the
 * certificate renewed `renew_before` ahead, swapped into the live SNI lookup (connections
 * already open keep theirs). A failed order or renewal is logged (GH_ERR_ACME), the current
 * certificate (if any) keeps being served, and it is tried again with a growing delay.
 *
 * The protocol is acme-client's (account, order, authorizations, finalize, download); this
 * file answers the challenges: HTTP-01 (RFC 8555 8.3) through answerHttpChallenge, which
 * the front calls before routing, and TLS-ALPN-01 (RFC 8737) through selectAlpn and
 * contextFor, which the TLS listener calls per handshake.
 */
import { X509Certificate } from 'node:crypto'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { Agent } from 'node:https'
import { readFileSync } from 'node:fs'
import { createSecureContext, rootCertificates, type SecureContext, type TLSSocket } from 'node:tls'
import type acme from 'acme-client'
import type { Logger } from 'pino'
import { GatehouseError } from '../core/errors.js'
import { TLS12_CIPHERS } from '../core/tls.js'
import type { AcmeSettings } from './settings.js'
import { AcmeStore, type StoredCertificate } from './store.js'

/** RFC 8737 section 6.2: the ALPN protocol of a TLS-ALPN-01 validation handshake. */
export const ACME_TLS_ALPN = 'acme-tls/1'
/** RFC 8555 section 8.3: where the HTTP-01 key authorization is fetched. */
const HTTP_CHALLENGE_PREFIX = '/.well-known/acme-challenge/'
/** The first retry after a failure; doubled on each failure, up to check_interval. */
const FIRST_RETRY_MS = 60_000

/**
 * An agent per directory origin: trusting `ca_root` besides the system's roots when given
 * (certificate checks stay on), and noting the last connection error. acme-client 5.4
 * loses a request's network error (ECONNREFUSED, a certificate not trusted) in a TypeError
 * of its own ("reading 'config'"); the error noted here is what the log then shows.
 */
class DirectoryAgent extends Agent {
  lastError: Error | undefined
  override createConnection(
    ...args: Parameters<Agent['createConnection']>
  ): ReturnType<Agent['createConnection']> {
    const socket = super.createConnection(...args)
    socket?.once('error', (err: Error) => (this.lastError = err))
    return socket
  }
}

const directoryAgents = new Map<string, DirectoryAgent>()

/**
 * acme-client speaks through one shared axios instance: a request to a directory goes
 * through its DirectoryAgent, and acme-client's own retries of a refused or failed request
 * (up to 75 s, in the middle of an order) are off: the whole order is retried here, with a
 * delay that grows (see order()).
 */
let acmeClient: Promise<typeof acme> | undefined

/**
 * acme-client, imported when the first order needs it (issue 13 item 4): with axios it is
 * about 25 MB of heap, which a server holding its certificates from storage, or using no
 * ACME at all, does not need. acme-client speaks through one shared axios instance: a
 * request to a directory goes through its DirectoryAgent, and acme-client's own retries of a
 * refused or failed request (up to 75 s, in the middle of an order) are off: the whole order
 * is retried here, with a delay that grows (see order()).
 */
function loadAcme(): Promise<typeof acme> {
  acmeClient ??= import('acme-client').then(({ default: lib }) => {
    const defaults = lib.axios.defaults as typeof lib.axios.defaults & {
      acmeSettings: { retryMaxAttempts: number }
    }
    defaults.acmeSettings.retryMaxAttempts = 0
    lib.axios.interceptors.request.use((config) => {
      const agent = config.url ? directoryAgents.get(originOf(config.url)) : undefined
      if (agent) config.httpsAgent = agent
      return config
    })
    return lib
  })
  return acmeClient
}

function originOf(url: string): string {
  try {
    return new URL(url).origin
  } catch {
    return ''
  }
}

interface HostState {
  /** The certificate served for the host now (from storage or the last order), or none yet. */
  current: { context: SecureContext; notAfter: number; serial: string } | undefined
  /** Orders that failed in a row (reset by a success). */
  failures: number
  /** Not tried again before this (ms since the epoch). */
  retryAt: number
}

export interface AcmeHostStatus {
  host: string
  /** ISO time the served certificate expires, or null when none is held yet. */
  not_after: string | null
  serial: string | null
  failures: number
}

/** A certificate's secure context with the front's TLS defaults (the listener's own settings apply to the handshake). */
function secureContext(pair: StoredCertificate): SecureContext {
  return createSecureContext({
    cert: pair.cert,
    key: pair.key,
    ciphers: TLS12_CIPHERS,
    honorCipherOrder: true,
  })
}

export class AcmeCertificates {
  private settings: AcmeSettings
  private store: AcmeStore
  private readonly hosts = new Map<string, HostState>()
  /** HTTP-01: token -> key authorization, while a challenge is pending. */
  private readonly httpTokens = new Map<string, string>()
  /** TLS-ALPN-01: host -> the validation certificate's context, while a challenge is pending. */
  private readonly alpnContexts = new Map<string, SecureContext>()
  /** Handshakes that chose `acme-tls/1` (selectAlpn): contextFor gives them the validation certificate. */
  private readonly validating = new WeakSet<object>()
  private client: acme.Client | undefined
  private timer: NodeJS.Timeout | undefined
  private running: Promise<void> | undefined
  /** A reload came during a pass: check again right after it. */
  private recheck = false
  private started = false
  private closed = false

  constructor(
    settings: AcmeSettings,
    hosts: readonly string[],
    private readonly log: Logger,
  ) {
    this.settings = settings
    this.store = new AcmeStore(settings.storage, settings.directory)
    this.trustRoot()
    this.setHosts(hosts)
  }

  /** Begin ordering what is missing or due, in the background (the listeners are open by then). */
  start(): void {
    this.started = true
    this.schedule(0)
  }

  /**
   * A reload: new settings and hosts. Certificates held for hosts still named are kept
   * (same CA and storage); a new host is read from storage or ordered.
   */
  update(settings: AcmeSettings, hosts: readonly string[]): void {
    const sameCa =
      settings.directory === this.settings.directory && settings.storage === this.settings.storage
    this.settings = settings
    if (!sameCa) {
      this.store = new AcmeStore(settings.storage, settings.directory)
      this.client = undefined
      this.hosts.clear()
    }
    this.trustRoot()
    this.setHosts(hosts)
    if (this.started) this.schedule(0)
  }

  /** Stop checking; an order under way finishes but is not stored or served. */
  close(): void {
    this.closed = true
    clearTimeout(this.timer)
  }

  /** The host names managed, in order. */
  names(): string[] {
    return [...this.hosts.keys()]
  }

  status(): AcmeHostStatus[] {
    return [...this.hosts].map(([host, state]) => ({
      host,
      not_after: state.current ? new Date(state.current.notAfter).toISOString() : null,
      serial: state.current?.serial ?? null,
      failures: state.failures,
    }))
  }

  /**
   * The context for a handshake naming `servername` (SNI): the TLS-ALPN-01 validation
   * certificate when selectAlpn chose `acme-tls/1` for this socket, else the host's
   * certificate; undefined when the host is not managed or has none yet.
   */
  contextFor(socket: object, servername: string): SecureContext | undefined {
    const host = servername.toLowerCase().replace(/\.$/, '')
    if (this.validating.has(socket)) return this.alpnContexts.get(host)
    return this.hosts.get(host)?.current?.context
  }

  /**
   * ALPN for a handshake (node's ALPNCallback; OpenSSL asks it before the certificate is
   * chosen): `acme-tls/1` only for a host with a TLS-ALPN-01 challenge pending (RFC 8737
   * section 3: such a handshake carries nothing else), else the first of `serverProtocols`
   * the client offers; undefined refuses the handshake (RFC 7301 section 3.2).
   */
  selectAlpn(
    socket: object,
    servername: string | false | undefined,
    offered: readonly string[],
    serverProtocols: readonly string[],
  ): string | undefined {
    if (offered.includes(ACME_TLS_ALPN)) {
      const host = servername ? servername.toLowerCase().replace(/\.$/, '') : ''
      if (!this.alpnContexts.has(host)) return undefined
      this.validating.add(socket)
      return ACME_TLS_ALPN
    }
    return serverProtocols.find((p) => offered.includes(p))
  }

  /**
   * HTTP-01: `GET /.well-known/acme-challenge/TOKEN` for a pending token is answered with
   * its key authorization (true); anything else is left to the routes (false).
   */
  answerHttpChallenge(req: IncomingMessage, res: ServerResponse): boolean {
    const url = req.url
    if (!url?.startsWith(HTTP_CHALLENGE_PREFIX) || (req.method !== 'GET' && req.method !== 'HEAD'))
      return false
    const keyAuthorization = this.httpTokens.get(url.slice(HTTP_CHALLENGE_PREFIX.length))
    if (keyAuthorization === undefined) return false
    res.writeHead(200, {
      'content-type': 'application/octet-stream',
      'content-length': Buffer.byteLength(keyAuthorization),
      'cache-control': 'no-store',
    })
    res.end(req.method === 'HEAD' ? undefined : keyAuthorization)
    return true
  }

  private trustRoot(): void {
    const origin = originOf(this.settings.directory)
    if (this.settings.ca_root === undefined) {
      directoryAgents.set(origin, new DirectoryAgent())
      return
    }
    let pem: Buffer
    try {
      pem = readFileSync(this.settings.ca_root)
    } catch (err) {
      throw new GatehouseError(
        'GH_ERR_ACME',
        `acme ca_root ${this.settings.ca_root}: ${(err as Error).message}`,
        {
          cause: err,
        },
      )
    }
    directoryAgents.set(origin, new DirectoryAgent({ ca: [...rootCertificates, pem.toString()] }))
  }

  private setHosts(hosts: readonly string[]): void {
    for (const host of [...this.hosts.keys()]) if (!hosts.includes(host)) this.hosts.delete(host)
    for (const host of hosts) {
      if (this.hosts.has(host)) continue
      this.hosts.set(host, { current: this.loadStored(host), failures: 0, retryAt: 0 })
    }
  }

  /** The stored certificate of `host`, if there is one that can be used (any other is ordered anew). */
  private loadStored(host: string): HostState['current'] {
    let stored: StoredCertificate | undefined
    try {
      stored = this.store.readCertificate(host)
    } catch (err) {
      this.log.warn(
        { code: 'GH_ERR_ACME', host, err },
        'acme: cannot read the stored certificate; ordering a new one',
      )
      return undefined
    }
    if (!stored) return undefined
    try {
      return this.install(stored)
    } catch (err) {
      this.log.warn(
        { code: 'GH_ERR_ACME', host, err },
        'acme: the stored certificate is unusable; ordering a new one',
      )
      return undefined
    }
  }

  private install(pair: StoredCertificate): NonNullable<HostState['current']> {
    const x509 = new X509Certificate(pair.cert)
    return { context: secureContext(pair), notAfter: Date.parse(x509.validTo), serial: x509.serialNumber }
  }

  private schedule(ms: number): void {
    clearTimeout(this.timer)
    if (this.closed) return
    this.timer = setTimeout(() => void this.check(), ms)
    this.timer.unref()
  }

  private due(state: HostState, now: number): boolean {
    if (now < state.retryAt) return false
    return !state.current || state.current.notAfter - now <= this.settings.renew_before
  }

  /** One pass: order every due host in turn, then wait for the next check or retry. */
  private async check(): Promise<void> {
    if (this.closed) return
    if (this.running) {
      this.recheck = true
      return
    }
    this.recheck = false
    this.running = (async () => {
      for (const [host, state] of [...this.hosts]) {
        if (this.closed) return
        if (this.hosts.get(host) === state && this.due(state, Date.now())) await this.order(host, state)
      }
    })()
    await this.running
    this.running = undefined
    const now = Date.now()
    const retries = [...this.hosts.values()].filter((s) => s.failures > 0).map((s) => s.retryAt - now)
    this.schedule(this.recheck ? 0 : Math.max(0, Math.min(this.settings.check_interval, ...retries)))
  }

  private async accountClient(): Promise<acme.Client> {
    if (this.client) return this.client
    const acme = await loadAcme()
    let accountKey = this.store.readAccountKey()
    if (!accountKey) {
      accountKey = await acme.crypto.createPrivateEcdsaKey()
      this.store.writeAccountKey(accountKey)
    }
    // Polling an order or authorization: from 1 s, doubling up to 10 s.
    this.client = new acme.Client({
      directoryUrl: this.settings.directory,
      accountKey,
      backoffMin: 1000,
      backoffMax: 10_000,
    })
    return this.client
  }

  private async order(host: string, state: HostState): Promise<void> {
    const renewing = state.current !== undefined
    const started = Date.now()
    try {
      const client = await this.accountClient()
      const acme = await loadAcme()
      const [key, csr] = await acme.crypto.createCsr(
        { commonName: host, altNames: [host] },
        await acme.crypto.createPrivateEcdsaKey(),
      )
      const cert = await client.auto({
        csr,
        ...(this.settings.email !== undefined ? { email: this.settings.email } : {}),
        termsOfServiceAgreed: this.settings.agree_tos,
        challengePriority: this.settings.challenges,
        // acme-client's own check fetches the challenge from this machine (port 80 or 443 of
        // the host's address), which says little behind NAT; the CA's validation decides.
        skipChallengeVerification: true,
        challengeCreateFn: (authz, challenge, keyAuthorization) =>
          this.present(authz, challenge, keyAuthorization),
        challengeRemoveFn: async (authz, challenge) => {
          if (challenge.type === 'http-01') this.httpTokens.delete(challenge.token)
          else this.alpnContexts.delete(authz.identifier.value)
        },
      })
      if (this.closed) return
      const pair = { cert: Buffer.from(cert), key }
      const installed = this.install(pair)
      this.store.writeCertificate(host, pair)
      state.current = installed
      state.failures = 0
      state.retryAt = 0
      this.log.info(
        {
          host,
          serial: installed.serial,
          not_after: new Date(installed.notAfter).toISOString(),
          ms: Date.now() - started,
        },
        renewing ? 'acme: certificate renewed' : 'acme: certificate obtained',
      )
    } catch (caught) {
      if (this.closed) return
      const err = this.withNetworkError(caught)
      state.failures += 1
      const delay = Math.min(this.settings.check_interval, FIRST_RETRY_MS * 2 ** (state.failures - 1))
      state.retryAt = Date.now() + delay
      this.log.error(
        {
          code: 'GH_ERR_ACME',
          host,
          err,
          directory: this.settings.directory,
          failures: state.failures,
          retry_in_ms: delay,
          serving: state.current
            ? `the current certificate (expires ${new Date(state.current.notAfter).toISOString()})`
            : 'no certificate for this host yet',
        },
        renewing ? 'acme: renewal failed' : 'acme: cannot obtain a certificate',
      )
    }
  }

  /** acme-client's TypeError for a request that got no response: the connection error behind it. */
  private withNetworkError(err: unknown): unknown {
    const agent = directoryAgents.get(originOf(this.settings.directory))
    if (!(err instanceof TypeError) || !/reading 'config'/.test(err.message) || !agent?.lastError) return err
    const cause = agent.lastError
    agent.lastError = undefined
    const code = (cause as NodeJS.ErrnoException).code
    return new GatehouseError(
      'GH_ERR_ACME',
      `cannot reach the ACME directory ${this.settings.directory}: ${code ? `${code} ` : ''}${cause.message}`,
      { cause },
    )
  }

  private async present(
    authz: acme.Authorization,
    challenge: { type: string; token: string },
    keyAuthorization: string,
  ): Promise<void> {
    this.log.info({ host: authz.identifier.value, challenge: challenge.type }, 'acme: answering a challenge')
    if (challenge.type === 'http-01') {
      this.httpTokens.set(challenge.token, keyAuthorization)
      return
    }
    if (challenge.type === 'tls-alpn-01') {
      const acme = await loadAcme()
      const [key, cert] = await acme.crypto.createAlpnCertificate(
        authz,
        keyAuthorization,
        await acme.crypto.createPrivateEcdsaKey(),
      )
      this.alpnContexts.set(authz.identifier.value, createSecureContext({ cert, key }))
      return
    }
    throw new GatehouseError(
      'GH_ERR_ACME',
      `acme: the CA offered no challenge Gatehouse answers (${challenge.type})`,
    )
  }
}

/**
 * node's `SNICallback` for a TLS listener (node:https or node:http2): for one of `hosts()`
 * (the listener's ACME hosts), the certificate ACME holds (or the TLS-ALPN-01 validation
 * certificate, see acmeAlpnCallback); else, or while none is held yet, `fallback(name)`
 * (the listener's own certificates). Getters, so a reload's changes apply to the next handshake.
 */
export function acmeSniCallback(
  certificates: () => AcmeCertificates | undefined,
  hosts: () => readonly string[],
  fallback: (servername: string) => SecureContext | undefined,
) {
  // A function, not an arrow: node calls it with the handshake's TLSSocket as `this`.
  return function (
    this: TLSSocket,
    servername: string,
    cb: (err: Error | null, ctx?: SecureContext) => void,
  ) {
    const host = servername.toLowerCase().replace(/\.$/, '')
    const acme = hosts().includes(host) ? certificates()?.contextFor(this, host) : undefined
    cb(null, acme ?? fallback(servername))
  }
}

/**
 * node's `ALPNCallback` for a TLS listener with ACME hosts: `acme-tls/1` for a pending
 * TLS-ALPN-01 validation, else the first of `serverProtocols` (`['h2', 'http/1.1']` for an
 * HTTP/2 listener) the client offers. node refuses `ALPNProtocols` beside it: the listener's
 * protocols go here instead.
 */
export function acmeAlpnCallback(
  certificates: () => AcmeCertificates | undefined,
  serverProtocols: readonly string[],
) {
  return function (this: TLSSocket, { servername, protocols }: { servername: string; protocols: string[] }) {
    const acme = certificates()
    return acme
      ? acme.selectAlpn(this, servername, protocols, serverProtocols)
      : serverProtocols.find((p) => protocols.includes(p))
  }
}
