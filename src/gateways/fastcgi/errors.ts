/*
 * What a ProtocolError from the codecs means at each FastCGI edge (docs/errors.md, "How
 * errors are made"). The codec (codec.ts) and the CGI header-block parser only say which
 * rule the bytes broke; the side that owns the socket picks the GH_ERR_* code.
 */
import { type ErrorCode, GatehouseError, type ProtocolError } from '../../core/errors.js'
import type { FastCGIErrorCode } from './codec.js'

/**
 * The application side (fastcgi_listen): bad input from the web server. Everything is a
 * malformed record except params over the limit, which get their own 431.
 */
const FROM_WEB_SERVER: Record<FastCGIErrorCode, ErrorCode> = {
  FCGI_BAD_VERSION: 'GH_ERR_FASTCGI_BAD_RECORD',
  FCGI_BAD_NAME_VALUE: 'GH_ERR_FASTCGI_BAD_RECORD',
  FCGI_BAD_BODY: 'GH_ERR_FASTCGI_BAD_RECORD',
  FCGI_PAIR_TOO_LARGE: 'GH_ERR_FASTCGI_BAD_RECORD',
  FCGI_PARAMS_TOO_LARGE: 'GH_ERR_FASTCGI_PARAMS_TOO_LARGE',
}

/** The code the application side gives a ProtocolError from the records or params it read. */
export function webServerErrorCode(err: ProtocolError): ErrorCode {
  return FROM_WEB_SERVER[err.code as FastCGIErrorCode] ?? 'GH_ERR_FASTCGI_BAD_RECORD'
}

/**
 * The client side (php-fpm and other FastCGI servers): whatever rule the upstream's bytes
 * broke, FastCGI's or the CGI header block's on FCGI_STDOUT, it is GH_ERR_FASTCGI_PROTOCOL.
 */
export function upstreamError(upstream: string, detail: string, cause?: ProtocolError): GatehouseError {
  return new GatehouseError(
    'GH_ERR_FASTCGI_PROTOCOL',
    `${upstream}: ${detail}`,
    cause ? { cause } : undefined,
  )
}
