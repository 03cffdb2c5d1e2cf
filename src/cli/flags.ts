import { isAbsolute, resolve } from 'node:path'
import type { GatehouseConfigInput } from '../config/schema.js'

/** CLI options as commander hands them over; every one maps onto a config key. */
export interface ServeFlags {
  listen?: string[]
  static?: string[]
  logLevel?: string
  accessLog?: string
  accessFormat?: string
  errorLog?: string
  uwsgiPass?: string[]
  uwsgiListen?: string[]
  uwsgiAllow?: string[]
}

type Input = Record<string, unknown> & GatehouseConfigInput

/** `[PREFIX=]DIR` -> [prefix, absolute dir]. */
export function splitMount(value: string, cwd: string): [string, string] {
  const eq = value.indexOf('=')
  const [prefix, dir] =
    eq > 0 && value.startsWith('/') ? [value.slice(0, eq), value.slice(eq + 1)] : ['/', value]
  return [prefix, isAbsolute(dir) ? dir : resolve(cwd, dir)]
}

/**
 * Lay CLI flags over a config file's contents (or an empty config): scalars given on the
 * command line win, `--listen` replaces the file's list, and routes from flags are added
 * after the file's routes. Paths on the command line resolve against the working directory.
 */
export function applyFlags(base: Record<string, unknown>, flags: ServeFlags, cwd: string): Input {
  const out: Input = { ...base }
  if (flags.listen && flags.listen.length > 0) out.listen = flags.listen
  const log = { ...((base.log as Record<string, unknown> | undefined) ?? {}) }
  if (flags.logLevel !== undefined) log.level = flags.logLevel
  if (flags.accessLog !== undefined) log.access_log = fileOrStream(flags.accessLog, cwd)
  if (flags.accessFormat !== undefined) log.access_format = flags.accessFormat
  if (flags.errorLog !== undefined) log.error_log = fileOrStream(flags.errorLog, cwd)
  if (Object.keys(log).length > 0) out.log = log
  const routes = [...((base.routes as unknown[] | undefined) ?? [])]
  for (const value of flags.static ?? []) {
    const [path, root] = splitMount(value, cwd)
    routes.push({ path, static: { root } })
  }
  for (const value of flags.uwsgiPass ?? []) {
    const [path, pass] = splitUwsgiPass(value, cwd)
    routes.push({ path, uwsgi: { pass } })
  }
  if (flags.uwsgiListen && flags.uwsgiListen.length > 0)
    out.uwsgi_listen = flags.uwsgiListen.map((a) => unixPathFrom(a, cwd))
  if (flags.uwsgiAllow && flags.uwsgiAllow.length > 0) out.uwsgi_allow = flags.uwsgiAllow
  if (routes.length > 0) out.routes = routes as Input['routes']
  return out
}

/** `unix:./x.sock` on the command line resolves against the working directory. */
function unixPathFrom(address: string, cwd: string): string {
  if (!address.startsWith('unix:') || isAbsolute(address.slice(5))) return address
  return `unix:${resolve(cwd, address.slice(5))}`
}

/** `[PREFIX=]ADDR` -> [prefix, address]; PREFIX defaults to `/`. */
export function splitUwsgiPass(value: string, cwd: string): [string, string] {
  const eq = value.indexOf('=')
  const [prefix, address] =
    eq > 0 && value.startsWith('/') ? [value.slice(0, eq), value.slice(eq + 1)] : ['/', value]
  return [prefix, unixPathFrom(address, cwd)]
}

function fileOrStream(value: string, cwd: string): string {
  if (value === '-') return 'stdout'
  if (['stdout', 'stderr', 'off'].includes(value)) return value
  return isAbsolute(value) ? value : resolve(cwd, value)
}
