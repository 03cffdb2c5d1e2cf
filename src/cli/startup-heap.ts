/**
 * Keep V8's young generation at its initial size while the server starts (issue 13 item 4).
 *
 * Loading the modules and building the config allocates a lot of long-lived objects; each
 * scavenge that sees many survive doubles the young generation (semi-spaces), up to 16 MB,
 * and V8 gives it back only after about 10 s of idleness. For an idle server that is several
 * MB of RSS for nothing (docs/benchmarks.md, "Memory"). While starting, the growth factor
 * is 1 (the young generation keeps its 1 MB semi-spaces and what survives goes to the old
 * generation, where it belongs anyway); once the server listens, startupDone() puts back
 * V8's default (2), so that under load the young generation grows as it always does: the
 * request path runs with V8's defaults (a smaller maximum semi-space would cost scavenges
 * under load, which is why `--max-semi-space-size` is not set).
 *
 * Imported first by cli/main.ts, which loads the rest of the program after it.
 * `semi_space_growth_factor` is read by V8 each time it grows the young generation, so a
 * change made after start applies (unlike --max-semi-space-size, fixed when the heap is set up).
 */
import { setFlagsFromString } from 'node:v8'

/** V8's default --semi-space-growth-factor (`node --v8-options`). */
const V8_DEFAULT_GROWTH = 2

/**
 * Whatever happens, V8's default is back after this long: a process that runs this entry
 * but never reaches startupDone() (a command that stays up without serving, a front started
 * some other way) must not keep a young generation that cannot grow.
 */
const AT_MOST_MS = 10_000

let starting = false

if (process.env.GATEHOUSE_STARTUP_HEAP !== 'default') {
  setFlagsFromString('--semi-space-growth-factor=1')
  starting = true
  setTimeout(startupDone, AT_MOST_MS).unref()
}

/** The server is up: V8's default young-generation growth from now on. */
export function startupDone(): void {
  if (!starting) return
  starting = false
  setFlagsFromString(`--semi-space-growth-factor=${V8_DEFAULT_GROWTH}`)
}
