/*
 * Rules about HTTP fields that every gateway applies the same way, whichever protocol the
 * fields arrived in (a CGI header block, an upstream's HTTP response, node's own output).
 * Pure.
 */

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
