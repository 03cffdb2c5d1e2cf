import { statusAction } from '../control/status.js'
import { asgiAction } from './asgi.js'
import { cgiAction } from './cgi.js'
import { fastcgiAction } from './fastcgi.js'
import { phpAction } from './php.js'
import { returnAction } from './return.js'
import { staticAction } from './static.js'
import { uwsgiAction } from './uwsgi.js'
import { wsgiAction } from './wsgi.js'

/**
 * Every route action Gatehouse knows. A gateway (CGI, FastCGI, uwsgi, WSGI, ASGI) is added
 * here and nowhere else: the config schema, `gatehouse check` and the router pick it up.
 */
export const ACTIONS = {
  static: staticAction,
  return: returnAction,
  uwsgi: uwsgiAction,
  cgi: cgiAction,
  fastcgi: fastcgiAction,
  php: phpAction,
  status: statusAction,
  wsgi: wsgiAction,
  asgi: asgiAction,
} as const

export type ActionName = keyof typeof ACTIONS
export const ACTION_NAMES = Object.keys(ACTIONS) as ActionName[]
