/*
 * The top-level `acme` table (automatic certificates, RFC 8555): which CA, which account
 * e-mail, where certificates are kept, which challenges may be answered and when to renew.
 * The host names come from the `listen` entries (`tls = { acme = [...] }`).
 */
import { resolve } from 'node:path'
import { z } from 'zod'
import { existingFile, filePath } from '../core/schema/paths.js'
import { duration } from '../core/schema/units.js'
import { strictObject } from '../core/schema/strict.js'
import type { SchemaEnv } from '../core/types.js'

/** Let's Encrypt's production directory: what Caddy and certbot use when told nothing else. */
export const LETS_ENCRYPT_DIRECTORY = 'https://acme-v02.api.letsencrypt.org/directory'

/** The challenge types Gatehouse answers itself (dns-01 needs a DNS provider: not offered). */
export const CHALLENGE_TYPES = ['http-01', 'tls-alpn-01'] as const
export type ChallengeType = (typeof CHALLENGE_TYPES)[number]

export interface AcmeSettings {
  /** The account's contact (`mailto:`), for the CA's expiry notices; none: an account without one. */
  email?: string | undefined
  /** The CA's directory URL. */
  directory: string
  /** A PEM file of CA certificates trusted, besides the system's, for the directory's HTTPS (a test CA). */
  ca_root?: string | undefined
  /** Account key and certificates: a directory of mode 0700, files 0600. */
  storage: string
  /** Answered challenges, in order of preference. */
  challenges: ChallengeType[]
  /** Renew when the certificate expires within this (ms). */
  renew_before: number
  /** How often the certificates' expiry is checked (ms). */
  check_interval: number
  /** Agreeing to the CA's terms of service (Let's Encrypt requires it to open an account). */
  agree_tos: boolean
}

/** Where certificates go when `storage` is not given: beside the config file (or the working directory). */
export const defaultStorage = (env: SchemaEnv) => resolve(env.baseDir, 'gatehouse-acme')

export function acmeSchema(env: SchemaEnv) {
  return strictObject({
    email: z.email().optional(),
    directory: z
      .url({ protocol: /^https$/, error: 'the directory is an https:// URL' })
      .default(LETS_ENCRYPT_DIRECTORY),
    ca_root: existingFile(env).optional(),
    storage: filePath(env).default(defaultStorage(env)),
    challenges: z
      .array(z.enum(CHALLENGE_TYPES))
      .min(1)
      .default([...CHALLENGE_TYPES]),
    renew_before: duration.prefault('30d'),
    check_interval: duration.prefault('12h').refine((ms) => ms >= 1000, 'check_interval is at least 1s'),
    agree_tos: z.boolean().default(true),
  })
}
