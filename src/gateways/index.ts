/**
 * Every gateway Gatehouse knows, one line each. Adding a gateway is a folder under
 * src/gateways/ whose index.ts exports its GatewayDefinition, plus a line here: the config
 * schema, `gatehouse check`, the router and the server's listeners pick it up from GATEWAYS.
 * The order is the order of the route actions in messages (`a route needs one action: ...`).
 */
import type { ActionAt, ActionKey, GatewayDefinition } from '../core/types.js'
import { cgiGateway } from './cgi/index.js'
import { fastcgiGateway } from './fastcgi/index.js'
import { phpGateway } from './php/index.js'
import { pythonGateway } from './python/index.js'
import { returnGateway } from './return/index.js'
import { staticGateway } from './static/index.js'
import { statusGateway } from './status/index.js'
import { uwsgiGateway } from './uwsgi/index.js'

export const GATEWAYS = [
  staticGateway,
  returnGateway,
  uwsgiGateway,
  cgiGateway,
  fastcgiGateway,
  phpGateway,
  statusGateway,
  pythonGateway,
] as const satisfies readonly GatewayDefinition[]

type Gateway = (typeof GATEWAYS)[number]

export type ActionName = ActionKey<Gateway>

/** Every route action, by the key that names it in a route, in GATEWAYS order. */
export const ACTIONS = Object.assign({}, ...GATEWAYS.map((g: GatewayDefinition) => g.actions ?? {})) as {
  [K in ActionName]: ActionAt<Gateway, K>
}
export const ACTION_NAMES = Object.keys(ACTIONS) as ActionName[]
