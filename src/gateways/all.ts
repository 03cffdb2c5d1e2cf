/**
 * Every gateway, loaded now: what the library entry (src/index.ts) imports, so that
 * `createGatehouse()` and `validateConfig()` stay synchronous whatever the config names.
 * The command line loads only the gateways its config uses (gateways/index.ts).
 */
import { cgiGateway } from './cgi/index.js'
import { fastcgiGateway } from './fastcgi/index.js'
import { type Gateways, registerGateways } from './index.js'
import { phpGateway } from './php/index.js'
import { proxyGateway } from './proxy/index.js'
import { pythonGateway } from './python/index.js'
import { returnGateway } from './return/index.js'
import { staticGateway } from './static/index.js'
import { statusGateway } from './status/index.js'
import { uwsgiGateway } from './uwsgi/index.js'

export const GATEWAYS: Gateways = [
  staticGateway,
  returnGateway,
  uwsgiGateway,
  cgiGateway,
  fastcgiGateway,
  phpGateway,
  statusGateway,
  pythonGateway,
  proxyGateway,
]

registerGateways(GATEWAYS)
