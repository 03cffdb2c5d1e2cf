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
export { ACTIONS } from './handlers/registry.js'
export { createStaticHandler, type StaticOptions } from './handlers/static.js'
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
