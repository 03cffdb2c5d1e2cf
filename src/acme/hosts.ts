/*
 * Which host names ACME manages, read from the config: each TLS `listen` entry's
 * `tls.acme` list, or `tls.acme = true` for the exact names the routes' `host` keys give
 * (a `*.` pattern or an IP address cannot be ordered with HTTP-01 or TLS-ALPN-01).
 */
import { isIP } from 'node:net'
import { listenEntry, type ListenEntry } from '../core/tls.js'
import type { ChallengeType } from './settings.js'

/** The exact host names of the routes (`host = "example.com"`), in order, once each. */
export function routeHostNames(
  routes: readonly { host?: string | readonly string[] | undefined }[],
): string[] {
  const names = routes.flatMap((r) => (r.host === undefined ? [] : [r.host].flat()))
  return [...new Set(names.filter((h) => !h.startsWith('*.') && isIP(h) === 0 && h.includes('.')))]
}

/** Per `listen` entry (by position), the ACME host names it serves: [] for none. */
export function listenAcmeHosts(
  listen: readonly ListenEntry[],
  routes: readonly { host?: string | readonly string[] | undefined }[],
): string[][] {
  return listen.map((entry) => {
    const acme = listenEntry(entry).tls?.acme
    if (acme === undefined) return []
    return acme === true ? routeHostNames(routes) : acme
  })
}

/** Every ACME host name of the config, once each, in `listen` order. */
export function allAcmeHosts(perListener: readonly string[][]): string[] {
  return [...new Set(perListener.flat())]
}

/**
 * The challenges that can be answered: HTTP-01 needs a plain listener (the CA fetches
 * http://HOST/.well-known/...); TLS-ALPN-01 is answered on the TLS listener of the host.
 */
export function usableChallenges(
  listen: readonly ListenEntry[],
  challenges: readonly ChallengeType[],
): ChallengeType[] {
  const plain = listen.some((e) => listenEntry(e).tls === undefined)
  return challenges.filter((c) => c !== 'http-01' || plain)
}

/**
 * What is wrong with the ACME part of a config, one message per problem with its path:
 * `acme = true` with no route naming a host, or only HTTP-01 allowed and no plain listener
 * to answer it.
 */
export function acmeProblems(
  listen: readonly ListenEntry[],
  routes: readonly { host?: string | readonly string[] | undefined }[],
  challenges: readonly ChallengeType[],
): { path: (string | number)[]; message: string }[] {
  const problems: { path: (string | number)[]; message: string }[] = []
  const perListener = listenAcmeHosts(listen, routes)
  perListener.forEach((hosts, i) => {
    if (hosts.length === 0 && listenEntry(listen[i]!).tls?.acme === true)
      problems.push({
        path: ['listen', i, 'tls', 'acme'],
        message:
          'acme = true takes the host names of the routes (`host = "example.com"`), and no route names one: list the names, acme = ["example.com"]',
      })
  })
  if (allAcmeHosts(perListener).length > 0 && usableChallenges(listen, challenges).length === 0)
    problems.push({
      path: ['acme', 'challenges'],
      message:
        'only http-01 is allowed and no plain HTTP listener can answer it: add one (port 80: { address = "0.0.0.0:80", redirect_http = true }) or allow "tls-alpn-01"',
    })
  return problems
}
