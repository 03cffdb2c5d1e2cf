/*
 * TLS on an HTTP listener (issue 14 item 1): the `tls` table of a `listen` entry, the
 * certificates it names read into secure contexts, and SNI choosing among them by the
 * names each certificate carries. node:https does the handshake; this file only decides
 * which certificate a client gets and with which protocol floor.
 */
import { readFileSync } from 'node:fs'
import { X509Certificate } from 'node:crypto'
import { isAbsolute, resolve } from 'node:path'
import { createSecureContext, type SecureContext, type SecureContextOptions } from 'node:tls'
import { z } from 'zod'
import { GatehouseError } from './errors.js'
import { strictObject } from './schema/strict.js'
import type { SchemaEnv } from './types.js'

/**
 * The TLS 1.2 suites when `ciphers` is not given: Mozilla's "intermediate" list (forward
 * secret key exchange, AEAD ciphers only). Node's own default ends in `HIGH`, which lets in
 * AES-CBC with SHA-1 and static-RSA key exchange, what testssl.sh reports as obsolete; TLS
 * 1.3's suites (all AEAD) stay OpenSSL's.
 */
export const TLS12_CIPHERS = [
  'ECDHE-ECDSA-AES128-GCM-SHA256',
  'ECDHE-RSA-AES128-GCM-SHA256',
  'ECDHE-ECDSA-AES256-GCM-SHA384',
  'ECDHE-RSA-AES256-GCM-SHA384',
  'ECDHE-ECDSA-CHACHA20-POLY1305',
  'ECDHE-RSA-CHACHA20-POLY1305',
  'DHE-RSA-AES128-GCM-SHA256',
  'DHE-RSA-AES256-GCM-SHA384',
  'DHE-RSA-CHACHA20-POLY1305',
].join(':')

/** One certificate (chain) and its private key, as absolute paths. */
export interface CertificatePair {
  cert: string
  key: string
}

export interface TlsSettings {
  /** In order: the first is served to a client whose SNI name (or lack of one) no other matches. */
  certificates: CertificatePair[]
  /** TLSv1.2 by default: TLS 1.0 and 1.1 are refused (RFC 8996). */
  min_version: 'TLSv1.2' | 'TLSv1.3'
  /** An OpenSSL cipher list for TLS 1.2; absent: TLS12_CIPHERS. */
  ciphers?: string | undefined
  /** Strict-Transport-Security sent with every response of the listener (RFC 6797), or none. */
  hsts?: string | undefined
  /**
   * Host names whose certificates are obtained and renewed by ACME (src/acme/), or `true`:
   * the names the routes' `host` lists. They go before `certificates` in SNI.
   */
  acme?: string[] | true | undefined
}

const path = (env: SchemaEnv) =>
  z
    .string()
    .min(1)
    .transform((v) => (isAbsolute(v) ? v : resolve(env.baseDir, v)))

/** A name ACME can get a certificate for with HTTP-01 or TLS-ALPN-01: a DNS name, no wildcard (that needs DNS-01). */
const ACME_HOST = z
  .string()
  .transform((h) => h.toLowerCase().replace(/\.$/, ''))
  .refine((h) => /^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$/.test(h), {
    message:
      'a DNS host name (a wildcard `*.` name needs the DNS-01 challenge, which Gatehouse does not answer)',
  })

/**
 * `tls = { cert, key }` or `tls = { certificates = [{ cert, key }, ...] }` (SNI), with
 * `min_version` and `ciphers`. Relative paths resolve against the config file's directory.
 * The files are read when the listener opens (loadTls), and again on every reload: a
 * certificate renewed on disk is served after SIGHUP even when the config is unchanged.
 */
export function tlsSchema(env: SchemaEnv) {
  const pair = strictObject({ cert: path(env), key: path(env) })
  return strictObject({
    cert: path(env).optional(),
    key: path(env).optional(),
    certificates: z.array(pair).min(1).optional(),
    acme: z.union([z.literal(true), z.array(ACME_HOST).min(1)]).optional(),
    min_version: z.enum(['TLSv1.2', 'TLSv1.3']).default('TLSv1.2'),
    ciphers: z.string().min(1).optional(),
    hsts: z
      .string()
      .regex(
        /^max-age=\d+(\s*;\s*(includeSubDomains|preload))*$/i,
        'a Strict-Transport-Security value: "max-age=SECONDS", then "; includeSubDomains" and "; preload" if wanted',
      )
      .optional(),
  }).transform((value, ctx): TlsSettings => {
    const certificates: CertificatePair[] = []
    if (value.cert !== undefined || value.key !== undefined) {
      if (value.cert === undefined || value.key === undefined) {
        ctx.addIssue({ code: 'custom', message: 'give both cert and key' })
        return z.NEVER
      }
      certificates.push({ cert: value.cert, key: value.key })
    }
    certificates.push(...(value.certificates ?? []))
    if (certificates.length === 0 && value.acme === undefined) {
      ctx.addIssue({
        code: 'custom',
        message: 'give cert and key, certificates = [{ cert, key }, ...], or acme = ["example.com", ...]',
      })
      return z.NEVER
    }
    return {
      certificates,
      min_version: value.min_version,
      ...(value.ciphers !== undefined ? { ciphers: value.ciphers } : {}),
      ...(value.hsts !== undefined ? { hsts: value.hsts } : {}),
      ...(value.acme !== undefined ? { acme: value.acme } : {}),
    }
  })
}

/** A certificate read and checked: its secure context and the host names it answers for. */
interface LoadedCertificate {
  options: SecureContextOptions
  context: SecureContext
  /** Lower-case DNS names from subjectAltName (or the CN when there is none); `*.x` wildcards kept. */
  names: string[]
}

export interface LoadedTls {
  /**
   * For https.createServer and server.setSecureContext: the default (first) certificate;
   * with none (only ACME hosts), the protocol settings alone.
   */
  defaults: SecureContextOptions
  certificates: LoadedCertificate[]
  /** The listener's Strict-Transport-Security value, or undefined. */
  hsts: string | undefined
}

function readPem(file: string, what: string): Buffer {
  try {
    return readFileSync(file)
  } catch (err) {
    const e = err as NodeJS.ErrnoException
    const why =
      e.code === 'ENOENT'
        ? 'no such file'
        : e.code === 'EACCES'
          ? 'permission denied'
          : e.code === 'EISDIR'
            ? 'a directory, not a file'
            : e.message
    throw new GatehouseError('GH_ERR_TLS', `TLS ${what} ${file}: ${why}`, { cause: err })
  }
}

/** The names a certificate is valid for: its DNS subjectAltNames, else its subject CN (RFC 6125 6.4.4). */
function certificateNames(cert: X509Certificate): string[] {
  const san = cert.subjectAltName
  if (san) {
    const names = san
      .split(/,\s*/)
      .filter((entry) => entry.startsWith('DNS:'))
      .map((entry) => entry.slice(4).toLowerCase())
    if (names.length > 0) return names
  }
  const cn = /(?:^|\n)CN=([^\n]+)/.exec(cert.subject)
  return cn ? [cn[1]!.toLowerCase()] : []
}

/**
 * Read every certificate and key of `settings` and build their secure contexts. Throws
 * GatehouseError GH_ERR_TLS with one line naming the file: missing, unreadable, not PEM,
 * or a key that is not the certificate's.
 */
export function loadTls(settings: TlsSettings): LoadedTls {
  const protocol: SecureContextOptions = {
    minVersion: settings.min_version,
    ciphers: settings.ciphers ?? TLS12_CIPHERS,
    // The server's order of preference, not the client's (nginx's ssl_prefer_server_ciphers).
    honorCipherOrder: true,
  }
  const certificates = settings.certificates.map(({ cert, key }) => {
    const certPem = readPem(cert, 'certificate')
    const keyPem = readPem(key, 'key')
    let x509: X509Certificate
    try {
      x509 = new X509Certificate(certPem)
    } catch (err) {
      throw new GatehouseError('GH_ERR_TLS', `TLS certificate ${cert}: not a PEM certificate`, { cause: err })
    }
    const options: SecureContextOptions = { cert: certPem, key: keyPem, ...protocol }
    let context: SecureContext
    try {
      context = createSecureContext(options)
    } catch (err) {
      const e = err as NodeJS.ErrnoException
      const why = /key values mismatch/i.test(e.message)
        ? `the key ${key} is not the key of this certificate`
        : /no cipher match/i.test(e.message)
          ? `ciphers ${JSON.stringify(settings.ciphers)} names no cipher OpenSSL knows`
          : `cannot use it with the key ${key} (${e.message})`
      throw new GatehouseError('GH_ERR_TLS', `TLS certificate ${cert}: ${why}`, { cause: err })
    }
    return { options, context, names: certificateNames(x509) }
  })
  return { defaults: certificates[0]?.options ?? protocol, certificates, hsts: settings.hsts }
}

/** `name` matches `pattern`: equal, or `*.example.com` covering one label (RFC 6125 6.4.3). */
function nameMatches(pattern: string, name: string): boolean {
  if (pattern === name) return true
  if (!pattern.startsWith('*.')) return false
  const dot = name.indexOf('.')
  return dot > 0 && name.slice(dot + 1) === pattern.slice(2)
}

/**
 * The certificate for an SNI name: an exact name first, then a wildcard, in the order the
 * certificates were given; none: the first certificate (what a client without SNI gets),
 * undefined when the listener has only ACME hosts.
 */
export function chooseCertificate(loaded: LoadedTls, servername: string): SecureContext | undefined {
  const name = servername.toLowerCase().replace(/\.$/, '')
  const exact = loaded.certificates.find((c) => c.names.includes(name))
  if (exact) return exact.context
  const wildcard = loaded.certificates.find((c) => c.names.some((p) => nameMatches(p, name)))
  return (wildcard ?? loaded.certificates[0])?.context
}

/** A `listen` entry as the config holds it: an address, or an address with `tls` or `redirect_http`. */
export type ListenEntry =
  | string
  | {
      address: string
      tls?: TlsSettings | undefined
      redirect_http?: true | number | undefined
      /** HTTP/2 keys (src/http/h2.ts): `http2 = false` on a TLS entry, `h2c = true` on a plain one. */
      http2?: boolean | undefined
      h2c?: boolean | undefined
    }

/**
 * The address text, TLS settings (undefined: plain HTTP) and `redirect_http` (a plain
 * listener sending every request to HTTPS: `true` for the first TLS listener's port, or a port).
 */
export function listenEntry(entry: ListenEntry): {
  address: string
  tls: TlsSettings | undefined
  redirect: true | number | undefined
} {
  return typeof entry === 'string'
    ? { address: entry, tls: undefined, redirect: undefined }
    : { address: entry.address, tls: entry.tls, redirect: entry.redirect_http }
}

/**
 * The certificates of every TLS `listen` entry, read now, by address text: at start and on
 * reload, before anything switches, so a bad file fails the start or leaves the old
 * configuration serving; in `listen` order (undefined for a plain entry). Throws GH_ERR_TLS.
 */
export function loadListenTls(listen: readonly ListenEntry[]): (LoadedTls | undefined)[] {
  // By position: two entries may share an address text (`127.0.0.1:0` twice).
  return listen.map((entry) => {
    const { tls } = listenEntry(entry)
    return tls ? loadTls(tls) : undefined
  })
}
