/*
 * What a ProtocolError from the codecs means at the uwsgi edges (docs/errors.md, "How errors
 * are made"). codec.ts and http-response.ts only say which rule the bytes broke; the side
 * that owns the socket picks the GH_ERR_* code, the ProtocolError as its cause.
 */
import { type ErrorCode, GatehouseError, isProtocolError, type ProtocolError } from '../../core/errors.js'
import type { UwsgiErrorCode } from './codec.js'

/**
 * A uwsgi packet that cannot be read (the listener) or written (the client, encoding its
 * vars): the same codes on both sides, as the packet is the same.
 */
const UWSGI_PACKET: Record<UwsgiErrorCode, ErrorCode> = {
  UWSGI_BAD_VAR: 'GH_ERR_UWSGI_PACKET',
  UWSGI_BAD_CONTENT_LENGTH: 'GH_ERR_UWSGI_PACKET',
  UWSGI_TRUNCATED: 'GH_ERR_UWSGI_PACKET',
  UWSGI_PLAIN_HTTP: 'GH_ERR_UWSGI_PLAIN_HTTP',
  UWSGI_BAD_MODIFIER: 'GH_ERR_UWSGI_MODIFIER',
  UWSGI_VARS_TOO_LARGE: 'GH_ERR_UWSGI_VARS_TOO_LARGE',
}

/** The listener's (and the client's encoder's) error for a uwsgi ProtocolError. */
export function packetError(err: ProtocolError): GatehouseError {
  const code = UWSGI_PACKET[err.code as UwsgiErrorCode] ?? 'GH_ERR_UWSGI_PACKET'
  return new GatehouseError(code, err.message, { cause: err })
}

/**
 * The client's error for anything its codecs threw: its own packet (above), or the
 * upstream's reply that is not valid HTTP/1 ('http', 'chunked'): GH_ERR_UPSTREAM. Anything
 * else is returned as it is.
 */
export function clientError(err: unknown): unknown {
  if (isProtocolError(err, 'uwsgi')) return packetError(err)
  if (isProtocolError(err, 'http') || isProtocolError(err, 'chunked'))
    return new GatehouseError('GH_ERR_UPSTREAM', err.message, { cause: err })
  return err
}

/** The listener's error for anything its codec threw; anything else is returned as it is. */
export function listenerError(err: unknown): unknown {
  return isProtocolError(err, 'uwsgi') ? packetError(err) : err
}
