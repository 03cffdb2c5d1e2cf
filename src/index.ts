/*
 * Gatehouse's public API: the server, its errors and config, then one block per gateway
 * with what a library user needs (docs/*.md, "Library"). Anything else is internal.
 */

// Every gateway, so that createGatehouse() and validateConfig() serve any config at once
// (the command line loads only those its config uses: src/gateways/index.ts).
import './gateways/all.js'

// The server, its errors, its configuration.
export { createGatehouse, Gatehouse, type ListeningAddress } from './gatehouse.js'
export {
  ERROR_CODES,
  type ErrorCode,
  GatehouseError,
  isGatehouseError,
  type Protocol,
  ProtocolError,
} from './core/errors.js'
export {
  type GatehouseConfig,
  type GatehouseConfigInput,
  loadConfigFile,
  type RouteConfig,
  validateConfig,
} from './config.js'
export { readConfigFile } from './config/load.js'

// The live control API (docs/control-api.md)
export { startControl } from './control/server.js'

// One action as a node:http listener, and the handler interface every action implements.
export { type StandaloneOptions, toRequestListener } from './http/context.js'
export { connectionInfo } from './http/connection.js'
export type { ListenerOptions, RequestListener } from './http/library-listener.js'
export type { ConnectionInfo, Handler, RequestContext, RouteMatch } from './core/types.js'

// static (docs/static.md)
export { createStaticHandler, type StaticOptions } from './gateways/static/action.js'

// status: php-fpm's status and ping pages (docs/process-manager.md)
export { StatusHandler, type StatusOptions } from './gateways/status/action.js'

// CGI (docs/cgi.md)
export {
  type CgiHandler,
  type CgiLibraryOptions,
  type CgiOptions,
  type CgiOptionsInput,
  type CgiRequestListener,
  cgi,
} from './gateways/cgi/action.js'
export { buildCgiMeta, type CgiMetaInput } from './cgi-vars/meta.js'
export {
  type CgiParseResult,
  type CgiResponseError,
  type CgiResponseErrorCode,
  type CgiResponseHead,
  CgiResponseParser,
} from './cgi-vars/response.js'

// FastCGI, client side (docs/fastcgi.md)
export {
  type FastCGIHandler,
  type FastCGIOptions,
  type FastCGIOptionsInput,
  fastcgi,
} from './gateways/fastcgi/action.js'
export {
  type CancelSignal,
  createFastCGIPool,
  FastCGIPool,
  type FastCGIPoolInput,
  type FastCGIPoolOptions,
  type FastCGIPoolStats,
  type FastCGIRequest,
  type FastCGIResponse,
  fastcgiRequest,
} from './gateways/fastcgi/pool.js'

// FastCGI, application side (docs/fastcgi.md)
export {
  createFastCGIServer,
  FastCGIServer,
  type FastCGIRequestInfo,
  type FastCGIServerOptions,
  fastcgiRequestInfo,
} from './gateways/fastcgi/server.js'

// PHP (docs/fastcgi.md)
export { type PhpHandler, type PhpOptions, type PhpOptionsInput, php } from './gateways/php/action.js'

// uwsgi, client side (docs/uwsgi.md)
export { createUwsgiHandler, type UwsgiOptions } from './gateways/uwsgi/action.js'
export {
  type UwsgiAddress,
  type UwsgiCallOptions,
  type UwsgiRequestOptions,
  type UwsgiResponse,
  uwsgiCall,
  uwsgiRequest,
} from './gateways/uwsgi/client.js'

// uwsgi, application side (docs/uwsgi.md)
export { createUwsgiServer, UwsgiServer, type UwsgiServerOptions } from './gateways/uwsgi/server.js'

// uwsgi's codec and vars (docs/uwsgi.md)
export {
  encodeUwsgiPacket,
  encodeUwsgiVars,
  type UwsgiRequestEvent,
  UwsgiRequestParser,
} from './gateways/uwsgi/codec.js'
export {
  type HttpResponseEvent,
  type HttpResponseHead,
  HttpResponseParser,
} from './gateways/uwsgi/http-response.js'
export { buildUwsgiVars, requestFromUwsgiVars, type UwsgiVarsInput } from './gateways/uwsgi/vars.js'
export type { GatewayRequestHead } from './cgi-vars/request.js'

// Any protocol's request as node:http objects, for app-side servers (docs/uwsgi.md)
export { createGatewayExchange, type GatewayExchange, type GatewayRequestInit } from './inbound/exchange.js'

// WSGI and ASGI (docs/wsgi.md, docs/asgi.md)
export { type WsgiHandler, type WsgiOptions, type WsgiOptionsInput, wsgi } from './gateways/python/wsgi.js'
export {
  type AsgiHandler,
  type AsgiListener,
  type AsgiOptions,
  type AsgiOptionsInput,
  asgi,
} from './gateways/python/asgi.js'

// The process manager behind the php-cgi and Python pools (docs/process-manager.md)
export {
  type PoolConfig,
  type PoolConfigInput,
  type PoolMode,
  type PoolSettings,
  poolSettings,
  poolSettingsSchema,
} from './process/settings.js'
export { type CancelLike, type RequestInfo, type WorkerLease } from './process/lease.js'
export { type PoolStatus, WorkerPool, type WorkerStatus } from './process/pool.js'
export type { WorkerCommand } from './process/spawn.js'
