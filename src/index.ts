export { loadConfigFile, readConfigFile, validateConfig } from './config/load.js'
export type { GatehouseConfig, GatehouseConfigInput, RouteConfig } from './config/schema.js'
export { ERROR_CODES, type ErrorCode, GatehouseError, isGatehouseError } from './core/errors.js'
export { createGatehouse, Gatehouse, type ListeningAddress } from './gatehouse.js'
export {
  CgiHandler,
  type CgiLibraryOptions,
  type CgiOptions,
  type CgiOptionsInput,
  type CgiRequestListener,
  cgi,
} from './gateways/cgi/action.js'
export {
  createFastCGIPool,
  fastcgiAddress,
  FastCGIPool,
  type CancelSignal,
  type FastCGIPoolInput,
  type FastCGIPoolOptions,
  type FastCGIPoolStats,
  type FastCGIRequest,
  type FastCGIResponse,
  fastcgiRequest,
} from './gateways/fastcgi/pool.js'
export {
  FastCGIHandler,
  type FastCGIOptions,
  type FastCGIOptionsInput,
  fastcgi,
} from './gateways/fastcgi/action.js'
export type { ListenerOptions, RequestListener } from './http/library-listener.js'
export { WsgiHandler, type WsgiOptions, type WsgiOptionsInput, wsgi } from './gateways/python/wsgi.js'
export {
  AsgiHandler,
  type AsgiListener,
  type AsgiOptions,
  type AsgiOptionsInput,
  asgi,
} from './gateways/python/asgi.js'
export { PhpHandler, type PhpOptions, type PhpOptionsInput, php } from './gateways/php/action.js'
export { ACTIONS } from './gateways/index.js'
export { createStaticHandler, type StaticOptions } from './gateways/static/action.js'
export { createUwsgiHandler, type UwsgiOptions } from './gateways/uwsgi/action.js'
export {
  type UwsgiAddress,
  type UwsgiCallOptions,
  type UwsgiRequestOptions,
  type UwsgiResponse,
  uwsgiCall,
  uwsgiRequest,
} from './gateways/uwsgi/client.js'
export {
  type HttpResponseEvent,
  type HttpResponseHead,
  HttpResponseParser,
} from './gateways/uwsgi/http-response.js'
export {
  decodeUwsgiHeader,
  decodeUwsgiVars,
  encodeUwsgiHeader,
  encodeUwsgiPacket,
  encodeUwsgiVars,
  type UwsgiHeader,
  type UwsgiRequestEvent,
  UwsgiRequestParser,
} from './gateways/uwsgi/codec.js'
export { buildUwsgiVars, requestFromUwsgiVars, type UwsgiVarsInput } from './gateways/uwsgi/vars.js'
export { createGatewayExchange, type GatewayExchange, type GatewayRequestInit } from './inbound/exchange.js'
export {
  type AnyFrame,
  encodeFrame,
  FrameDecoder,
  FrameType,
  marshalDumps,
  marshalLoads,
  type MarshalValue,
  type NodeFrame,
  type WorkerFrame,
} from './gateways/python/codec.js'
export { createUwsgiServer, UwsgiServer, type UwsgiServerOptions } from './gateways/uwsgi/server.js'
export {
  createFastCGIServer,
  FastCGIServer,
  type FastCGIRequestInfo,
  type FastCGIServerOptions,
  fastcgiRequestInfo,
} from './gateways/fastcgi/server.js'
export { type GatewayRequestHead, requestFromGatewayVars } from './cgi-vars/request.js'
export { buildCgiMeta, type CgiMetaInput, headerMetaName } from './cgi-vars/meta.js'
export {
  type CgiParseResult,
  type CgiResponseError,
  type CgiResponseErrorCode,
  type CgiResponseHead,
  CgiResponseParser,
} from './cgi-vars/response.js'
export { CONNECTION_INFO, connectionInfo, setConnectionInfo } from './http/connection.js'
export {
  buildContext,
  parseRequest,
  runHandler,
  type StandaloneOptions,
  toRequestListener,
} from './http/context.js'
export type { ActionDefinition, ConnectionInfo, Handler, RequestContext, RouteMatch } from './core/types.js'
export { type CancelLike, type RequestInfo, type WorkerLease } from './process/lease.js'
export { killAllWorkers, livePools, type PoolStatus, WorkerPool, type WorkerStatus } from './process/pool.js'
export {
  type PoolConfig,
  type PoolConfigInput,
  type PoolMode,
  type PoolSettings,
  poolSettings,
  poolSettingsSchema,
} from './process/settings.js'
export { type WorkerCommand } from './process/spawn.js'
export { allPoolsJson, formatStatus, StatusHandler, statusAction } from './gateways/status/action.js'
export { type FastCGIUpstream, ManagedFastCGI } from './gateways/fastcgi/managed-pool.js'
