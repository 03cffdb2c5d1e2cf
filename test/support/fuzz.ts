/**
 * Parameters for the fuzz properties (test/fuzz/): the same seed everywhere in CI, a fresh
 * one on each local run, and a failure report that says how to replay it.
 *
 *   GATEHOUSE_FUZZ_SEED=<n>     replay with this seed (and GATEHOUSE_FUZZ_PATH=<path> to go
 *                               straight to the shrunk case fast-check reported)
 *   CI=1 / CI=true              a fixed seed, so the suite is deterministic in CI
 *   GATEHOUSE_FUZZ_MINUTES=<m>  run each property for about m minutes instead of numRuns
 *                               (npm run fuzz -- --minutes m)
 *
 * The default run is small: the fuzz files are also part of `npm test`.
 */
import { relative } from 'node:path'
import { fileURLToPath } from 'node:url'
import fc from 'fast-check'
import { REPO_ROOT } from './helpers.js'

/** The seed CI uses (any fixed number would do: what matters is that it does not change). */
export const CI_SEED = 18_2026

export interface FuzzOptions {
  /** import.meta.url of the test file, for the reproduce line. */
  file: string
  /** Runs in the default (bounded) mode. */
  numRuns?: number
  /** Wall-clock bound in the default mode, in ms: the run stops (and passes) there. */
  timeLimitMs?: number
}

function envNumber(name: string): number | undefined {
  const raw = process.env[name]
  if (raw === undefined || raw.trim() === '') return undefined
  const n = Number(raw)
  if (!Number.isFinite(n)) throw new Error(`${name}=${raw} is not a number`)
  return n
}

function seedFromEnv(): number {
  const seed = envNumber('GATEHOUSE_FUZZ_SEED')
  if (seed !== undefined) return seed | 0
  const ci = process.env.CI
  if (ci !== undefined && ci !== '' && ci !== '0' && ci.toLowerCase() !== 'false') return CI_SEED
  // fast-check's own default seed, taken here so the reproduce line can name it.
  return (Date.now() ^ (Math.random() * 0x100000000)) | 0
}

/** Regular-expression escape, for --test-name-pattern. */
function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')
}

/** The fast-check parameters of the property called `name` (the test's name). */
export function fuzzParams<Ts>(name: string, options: FuzzOptions): fc.Parameters<Ts> {
  const seed = seedFromEnv()
  const minutes = envNumber('GATEHOUSE_FUZZ_MINUTES')
  const path = process.env.GATEHOUSE_FUZZ_SEED ? process.env.GATEHOUSE_FUZZ_PATH || undefined : undefined
  const file = relative(REPO_ROOT, fileURLToPath(options.file))
  const timed = minutes !== undefined && minutes > 0
  const limit = fc.interruptAfterTimeLimit(
    timed ? Math.round(minutes * 60_000) : (options.timeLimitMs ?? 5_000),
  )
  return {
    seed,
    ...(path !== undefined ? { path } : {}),
    // Long runs are bounded by time, not by count; the short ones by both, so a slow
    // machine makes the suite run fewer cases rather than run late.
    numRuns: timed ? Number.MAX_SAFE_INTEGER : (options.numRuns ?? 200),
    plugins: [limit as fc.Plugin<Ts>],
    reporter(out) {
      if (!out.failed) return
      // fast-check's report names the seed, the path and the counterexample; the line
      // added here is the command that replays it.
      const replay =
        `GATEHOUSE_FUZZ_SEED=${out.seed}` +
        (out.counterexamplePath ? ` GATEHOUSE_FUZZ_PATH=${out.counterexamplePath}` : '') +
        ` node --test --test-name-pattern='^${escapeRegExp(name).replace(/'/g, "'\\''")}$' ${file}`
      throw new Error(`${fc.defaultReportMessage(out)}\n\nReproduce with:\n  ${replay}`, {
        cause: out.errorInstance,
      })
    },
  }
}
