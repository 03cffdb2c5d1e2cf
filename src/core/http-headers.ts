/*
 * Rules about HTTP fields that every gateway applies the same way, whichever protocol the
 * fields arrived in (a CGI header block, an upstream's HTTP response, node's own output).
 * Pure.
 */
import { STATUS_CODES } from 'node:http'

/**
 * Fields that describe one connection (RFC 9110 7.6.1, plus the pre-standard Keep-Alive and
 * Proxy-Connection), lower case. A gateway's response never carries them on to its client:
 * the connection to the client has its own framing and its own persistence.
 */
export const HOP_BY_HOP: ReadonlySet<string> = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
])

/**
 * RFC 9110 9.2.2: methods a gateway may send again to another worker when the first vanished
 * after the request was written but before any answer came (nginx's proxy_next_upstream
 * retries only these by default: the app may have begun a POST).
 */
export const IDEMPOTENT_METHODS: ReadonlySet<string> = new Set([
  'GET',
  'HEAD',
  'OPTIONS',
  'TRACE',
  'PUT',
  'DELETE',
])

/** RFC 9110 5.6.2: a token, what a field name is. */
const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/
/** RFC 9110 5.5 (bytes read as latin1): VCHAR, obs-text, SP and HTAB; never CR, LF or NUL. */
const FIELD_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/

/** What makes a line not a field: no `name:`, a name that is not a token, a control character in the value. */
export type FieldLineProblem = 'no-colon' | 'name' | 'value'

export interface FieldLine {
  name: string
  /** Without the whitespace around it (RFC 9112 5). */
  value: string
  /** null for a valid field. */
  problem: FieldLineProblem | null
}

/**
 * One `name: value` line of a header block or trailer section, without its line end (a
 * line starting with whitespace, obsolete folding, is the caller's to refuse first).
 */
export function parseFieldLine(line: string): FieldLine {
  const colon = line.indexOf(':')
  if (colon <= 0) return { name: '', value: '', problem: 'no-colon' }
  const name = line.slice(0, colon)
  const value = line.slice(colon + 1).replace(/^[ \t]+|[ \t]+$/g, '')
  const problem = !TOKEN.test(name) ? 'name' : !FIELD_VALUE.test(value) ? 'value' : null
  return { name, value, problem }
}

/**
 * The one rule for an application's final response status, whichever gateway carried it
 * (CGI/FastCGI `Status:`, a uwsgi app's status line, WSGI's status, ASGI's `status`):
 * an integer 200-599. Anything else (999, 0, 1xx as final) is the upstream's fault: 502.
 */
export function isFinalStatus(status: number): boolean {
  return Number.isInteger(status) && status >= 200 && status <= 599
}

const CLASS_PHRASES: Record<number, string> = {
  1: 'Informational',
  2: 'Success',
  3: 'Redirection',
  4: 'Client Error',
  5: 'Server Error',
}

/**
 * The reason phrase Gatehouse writes for `status` (one table: node's STATUS_CODES), or for
 * a code without a registered phrase the phrase of its class (`299 Success`): never
 * another code's phrase.
 */
export function reasonPhrase(status: number): string {
  return STATUS_CODES[status] ?? CLASS_PHRASES[Math.floor(status / 100)] ?? 'Unknown'
}
