import { z } from 'zod'

const DURATION = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?$/
const SIZE = /^(\d+(?:\.\d+)?)\s*(b|k|kb|kib|m|mb|mib|g|gb|gib)?$/i
const SIZE_FACTOR: Record<string, number> = {
  b: 1,
  k: 1024,
  kb: 1024,
  kib: 1024,
  m: 1024 ** 2,
  mb: 1024 ** 2,
  mib: 1024 ** 2,
  g: 1024 ** 3,
  gb: 1024 ** 3,
  gib: 1024 ** 3,
}
const DURATION_FACTOR: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }

/** `10` (seconds), `"10s"`, `"500ms"`, `"2m"`, `"30d"` -> milliseconds; null when malformed. */
export function parseDuration(value: number | string): number | null {
  if (typeof value === 'number') return Number.isFinite(value) && value >= 0 ? Math.round(value * 1000) : null
  const m = DURATION.exec(value.trim())
  if (!m) return null
  return Math.round(Number(m[1]) * DURATION_FACTOR[m[2] ?? 's']!)
}

/** `1048576`, `"16k"`, `"10MB"`, `"1GiB"` (binary units) -> bytes; null when malformed. */
export function parseSize(value: number | string): number | null {
  if (typeof value === 'number') return Number.isSafeInteger(value) && value >= 0 ? value : null
  const m = SIZE.exec(value.trim())
  if (!m) return null
  return Math.floor(Number(m[1]) * SIZE_FACTOR[(m[2] ?? 'b').toLowerCase()]!)
}

/** A duration in the config: a number of seconds or a string with a unit; parsed to milliseconds. */
export const duration = z.union([z.number(), z.string()]).transform((value, ctx) => {
  const ms = parseDuration(value)
  if (ms === null) {
    ctx.addIssue({
      code: 'custom',
      message: `not a duration: ${JSON.stringify(value)} (use seconds or "500ms", "10s", "2m")`,
    })
    return z.NEVER
  }
  return ms
})

/** A size in the config: a number of bytes or a string with a binary unit; parsed to bytes. */
export const size = z.union([z.number(), z.string()]).transform((value, ctx) => {
  const bytes = parseSize(value)
  if (bytes === null) {
    ctx.addIssue({
      code: 'custom',
      message: `not a size: ${JSON.stringify(value)} (use bytes or "16k", "10MB")`,
    })
    return z.NEVER
  }
  return bytes
})

/**
 * limits.max_body_bytes when not set (and the library listeners' default): 1 GiB. The
 * gateways stream bodies with flow control or spool them to disk, so the cap guards the
 * disk and the app, not Node's memory; normal uploads and git pushes fit (docs/configuration.md).
 */
export const DEFAULT_MAX_BODY_BYTES = 1024 * 1024 * 1024
