export { loadConfigFile, readConfigFile, validateConfig } from './config/load.js'
export type { GatehouseConfig, GatehouseConfigInput, RouteConfig } from './config/schema.js'
export { ERROR_CODES, type ErrorCode, GatehouseError, isGatehouseError } from './errors.js'
export { createGatehouse, Gatehouse, type ListeningAddress } from './gatehouse.js'
export {
  CgiHandler,
  type CgiLibraryOptions,
  type CgiOptions,
  type CgiOptionsInput,
  type CgiRequestListener,
  cgi,
} from './handlers/cgi.js'
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
} from './fastcgi/pool.js'
export { FastCGIHandler, type FastCGIOptions, type FastCGIOptionsInput, fastcgi } from './handlers/fastcgi.js'
export type { ListenerOptions, RequestListener } from './handlers/listener.js'
export { WsgiHandler, type WsgiOptions, type WsgiOptionsInput, wsgi } from './handlers/wsgi.js'
export {
  AsgiHandler,
  type AsgiListener,
  type AsgiOptions,
  type AsgiOptionsInput,
  asgi,
} from './handlers/asgi.js'
export { PhpHandler, type PhpOptions, type PhpOptionsInput, php } from './handlers/php.js'
export { ACTIONS } from './handlers/registry.js'
export { createStaticHandler, type StaticOptions } from './handlers/static.js'
export { createUwsgiHandler, type UwsgiOptions } from './handlers/uwsgi.js'
export {
  type UwsgiAddress,
  type UwsgiCallOptions,
  type UwsgiRequestOptions,
  type UwsgiResponse,
  uwsgiCall,
  uwsgiRequest,
} from './handlers/uwsgi-client.js'
export {
  type HttpResponseEvent,
  type HttpResponseHead,
  HttpResponseParser,
} from './protocol/http-response.js'
export {
  decodeUwsgiHeader,
  decodeUwsgiVars,
  encodeUwsgiHeader,
  encodeUwsgiPacket,
  encodeUwsgiVars,
  type UwsgiHeader,
  type UwsgiRequestEvent,
  UwsgiRequestParser,
} from './protocol/uwsgi.js'
export { buildUwsgiVars, requestFromUwsgiVars, type UwsgiVarsInput } from './protocol/uwsgi-vars.js'
export {
  createGatewayExchange,
  type GatewayExchange,
  type GatewayRequestInit,
} from './server/gateway-request.js'
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
} from './protocol/worker.js'
export { createUwsgiServer, UwsgiServer, type UwsgiServerOptions } from './server/uwsgi-server.js'
export {
  createFastCGIServer,
  FastCGIServer,
  type FastCGIRequestInfo,
  type FastCGIServerOptions,
  fastcgiRequestInfo,
} from './server/fastcgi-server.js'
export { type GatewayRequestHead, requestFromGatewayVars } from './protocol/gateway-vars.js'
export { buildCgiMeta, type CgiMetaInput, headerMetaName } from './protocol/cgi-meta.js'
export {
  type CgiParseResult,
  type CgiResponseError,
  type CgiResponseErrorCode,
  type CgiResponseHead,
  CgiResponseParser,
} from './protocol/cgi-response.js'
export { CONNECTION_INFO, connectionInfo, setConnectionInfo } from './server/connection.js'
export {
  buildContext,
  parseRequest,
  runHandler,
  type StandaloneOptions,
  toRequestListener,
} from './server/context.js'
export type { ActionDefinition, ConnectionInfo, Handler, RequestContext, RouteMatch } from './types.js'
export {
  type CancelLike,
  killAllWorkers,
  livePools,
  type PoolConfig,
  type PoolConfigInput,
  type PoolMode,
  type PoolSettings,
  poolSettings,
  poolSettingsSchema,
  type PoolStatus,
  type RequestInfo,
  type WorkerCommand,
  type WorkerLease,
  WorkerPool,
  type WorkerStatus,
} from './process/supervisor.js'
export { allPoolsJson, formatStatus, StatusHandler, statusAction } from './control/status.js'
export { type FastCGIUpstream, ManagedFastCGI } from './fastcgi/managed.js'
