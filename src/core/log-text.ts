/**
 * The error log as text a person reads on a terminal: one pino record (a JSON line) becomes
 *
 *     06:53:09.123 ERROR cannot load the WSGI application nope:app pool=wsgi worker=2552
 *         traceback:
 *           Traceback (most recent call last):
 *             File "...", line 101, in main
 *           ModuleNotFoundError: No module named 'nope'
 *
 * time (local, HH:MM:SS.mmm), level (coloured on a terminal without NO_COLOR), the message,
 * then key=value pairs (a string with spaces, quotes or control characters is quoted as JSON
 * quotes it); a value of several lines (a Python traceback, an error's stack) follows the line,
 * indented, as it was written, not escaped.
 *
 * Written here rather than with pino-pretty: pino-pretty prints the fields as an indented
 * `key: value` block under the line, not as key=value pairs on it, and its synchronous mode
 * is its own SonicBoom on the descriptor, which would bypass our destination (the file opened
 * at start, SIGUSR1 reopening it, the write-error report). This is a wrapper around that
 * destination: pino writes JSON to it, it writes text to the destination, and reopen and
 * flushSync go through.
 */

/** pino's numeric levels. */
const LEVELS: Record<number, { name: string; colour: string }> = {
  10: { name: 'TRACE', colour: '\x1b[90m' },
  20: { name: 'DEBUG', colour: '\x1b[36m' },
  30: { name: 'INFO ', colour: '\x1b[32m' },
  40: { name: 'WARN ', colour: '\x1b[33m' },
  50: { name: 'ERROR', colour: '\x1b[31m' },
  60: { name: 'FATAL', colour: '\x1b[1;35m' },
}
const RESET = '\x1b[0m'
const DIM = '\x1b[2m'

/** The record's own fields, not printed as key=value. `pid` is Gatehouse's own, on every line. */
const OWN = new Set(['level', 'time', 'msg', 'pid', 'hostname'])

const pad2 = (n: number) => (n < 10 ? `0${n}` : String(n))
const pad3 = (n: number) => (n < 10 ? `00${n}` : n < 100 ? `0${n}` : String(n))

/** `HH:MM:SS.mmm`, local time. */
export function clockTime(d: Date): string {
  return `${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}.${pad3(d.getMilliseconds())}`
}

/** Control characters (but tab) as `\xHH`, so that a log line cannot drive the terminal. */
function safe(s: string): string {
  return s.replace(/[\x00-\x08\x0a-\x1f\x7f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`)
}

/** A string value as logfmt writes it: bare when it can be, JSON-quoted otherwise. */
function quote(s: string): string {
  return s !== '' && !/[\s"=\\\x00-\x1f\x7f]/.test(s) ? s : JSON.stringify(s)
}

interface Rendered {
  pairs: string[]
  blocks: { key: string; text: string }[]
}

function isMultiLine(v: unknown): v is string {
  return typeof v === 'string' && v.replace(/\n+$/, '').includes('\n')
}

function render(key: string, value: unknown, out: Rendered, depth: number): void {
  if (value === undefined) return
  if (isMultiLine(value)) {
    out.blocks.push({ key, text: value.replace(/\n+$/, '') })
    return
  }
  if (typeof value === 'string') {
    out.pairs.push(`${key}=${quote(value.replace(/\n+$/, ''))}`)
    return
  }
  if (value === null || typeof value !== 'object') {
    out.pairs.push(`${key}=${String(value)}`)
    return
  }
  // A list of plain words (a command's argv) reads best as [a,b,c].
  if (
    Array.isArray(value) &&
    value.every((v) => typeof v === 'number' || (typeof v === 'string' && quote(v) === v && !v.includes(',')))
  ) {
    out.pairs.push(`${key}=[${value.join(',')}]`)
    return
  }
  if (Array.isArray(value) || depth >= 3) {
    out.pairs.push(`${key}=${quote(JSON.stringify(value))}`)
    return
  }
  const obj = value as Record<string, unknown>
  // A serialized error (pino's err serializer): its stack (which begins with type and
  // message) as a block, its other properties (code, ...) as pairs.
  if (typeof obj.stack === 'string' && obj.stack !== '') {
    for (const [k, v] of Object.entries(obj)) {
      if (k === 'stack' || k === 'message' || k === 'type') continue
      render(`${key}.${k}`, v, out, depth + 1)
    }
    out.blocks.push({ key, text: obj.stack.replace(/\n+$/, '') })
    return
  }
  for (const [k, v] of Object.entries(obj)) render(`${key}.${k}`, v, out, depth + 1)
}

/** One pino JSON line -> text line(s), ending with a newline. A line that is not JSON is kept. */
export function formatRecord(line: string, colour: boolean): string {
  let record: Record<string, unknown>
  try {
    record = JSON.parse(line) as Record<string, unknown>
  } catch {
    return line.endsWith('\n') ? line : `${line}\n`
  }
  const when =
    typeof record.time === 'string' || typeof record.time === 'number' ? new Date(record.time) : new Date()
  const level = LEVELS[record.level as number] ?? { name: String(record.level).padEnd(5), colour: '' }
  const out: Rendered = { pairs: [], blocks: [] }
  for (const [k, v] of Object.entries(record)) if (!OWN.has(k)) render(k, v, out, 0)
  const msg = typeof record.msg === 'string' ? record.msg : ''
  const [first = '', ...more] = msg.replace(/\n+$/, '').split('\n')
  const time = clockTime(Number.isNaN(when.getTime()) ? new Date() : when)
  let text = colour
    ? `${DIM}${time}${RESET} ${level.colour}${level.name}${RESET} ${safe(first)}`
    : `${time} ${level.name} ${safe(first)}`
  if (out.pairs.length > 0) text += ` ${out.pairs.join(' ')}`
  text = `${text.trimEnd()}\n`
  for (const l of more) text += `    ${safe(l)}\n`
  for (const block of out.blocks) {
    text += `    ${colour ? DIM : ''}${block.key}:${colour ? RESET : ''}\n`
    for (const l of block.text.split('\n')) text += `      ${safe(l)}\n`
  }
  return text
}

/** A pino destination that writes `formatRecord`'s text to `inner`; reopen and flushSync go through. */
export interface TextSinkInner {
  write(s: string): unknown
  reopen?: () => void
  flushSync?: () => void
  end?: () => void
}

export function textSink<S extends TextSinkInner>(inner: S, colour: boolean): S {
  return {
    // pino writes one record a call; a JSON line holds no raw newline, so splitting is safe.
    write: (s: string) =>
      inner.write(
        s
          .split('\n')
          .filter((l) => l !== '')
          .map((l) => formatRecord(l, colour))
          .join(''),
      ),
    reopen: () => inner.reopen?.(),
    flushSync: () => inner.flushSync?.(),
    end: () => inner.end?.(),
  } as unknown as S
}
