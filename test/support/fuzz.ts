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

// ---------------------------------------------------------------------------------------
// Input: random bytes, or a valid message mutated

export type Mutation =
  | { op: 'flip'; at: number; bit: number }
  | { op: 'set'; at: number; byte: number }
  | { op: 'insert'; at: number; bytes: Uint8Array }
  | { op: 'delete'; at: number; count: number }
  | { op: 'truncate'; at: number }

export const mutationArb: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ op: fc.constant('flip' as const), at: fc.nat(), bit: fc.nat(7) }),
  fc.record({
    op: fc.constant('set' as const),
    at: fc.nat(),
    byte: fc.constantFrom(0, 1, 0x7f, 0x80, 0xff, 0x0a, 0x0d, 0x20, 0x3a),
  }),
  fc.record({
    op: fc.constant('insert' as const),
    at: fc.nat(),
    bytes: fc.uint8Array({ minLength: 1, maxLength: 16 }),
  }),
  fc.record({ op: fc.constant('delete' as const), at: fc.nat(), count: fc.integer({ min: 1, max: 16 }) }),
  fc.record({ op: fc.constant('truncate' as const), at: fc.nat() }),
)

/** Apply mutations in order; positions are taken modulo the current length. */
export function mutate(valid: Buffer, mutations: readonly Mutation[]): Buffer {
  let b = Buffer.from(valid)
  for (const m of mutations) {
    const at = b.length === 0 ? 0 : m.at % (b.length + (m.op === 'insert' ? 1 : 0))
    switch (m.op) {
      case 'flip':
        if (b.length > 0) b[at] = b[at]! ^ (1 << m.bit)
        break
      case 'set':
        if (b.length > 0) b[at] = m.byte
        break
      case 'insert':
        b = Buffer.concat([b.subarray(0, at), m.bytes, b.subarray(at)])
        break
      case 'delete':
        b = Buffer.concat([b.subarray(0, at), b.subarray(at + m.count)])
        break
      case 'truncate':
        b = b.subarray(0, at)
        break
    }
  }
  return b
}

/** Random bytes, or one of `valid` with one to six mutations. */
export function inputArb(valid: fc.Arbitrary<Buffer>, maxRandom = 2000): fc.Arbitrary<Buffer> {
  return fc.oneof(
    { weight: 1, arbitrary: fc.uint8Array({ maxLength: maxRandom }).map((a) => Buffer.from(a)) },
    {
      weight: 3,
      arbitrary: fc
        .tuple(valid, fc.array(mutationArb, { minLength: 1, maxLength: 6 }))
        .map(([v, muts]) => mutate(v, muts)),
    },
  )
}

/** Cut points (any naturals, taken modulo the length): the pieces a decoder is fed. */
export const cutsArb = fc.array(fc.nat(), { maxLength: 6 })

export function pieces(buf: Buffer, cuts: readonly number[]): Buffer[] {
  const at = [...new Set(cuts.map((c) => (buf.length === 0 ? 0 : c % (buf.length + 1))))].sort(
    (a, b) => a - b,
  )
  const out: Buffer[] = []
  let prev = 0
  for (const c of at) {
    out.push(buf.subarray(prev, c))
    prev = c
  }
  out.push(buf.subarray(prev))
  return out
}
