import { statusAction } from './status/action.js'
import { asgiAction } from './python/asgi.js'
import { cgiAction } from './cgi/action.js'
import { fastcgiAction } from './fastcgi/action.js'
import { phpAction } from './php/action.js'
import { returnAction } from './return/action.js'
import { staticAction } from './static/action.js'
import { uwsgiAction } from './uwsgi/action.js'
import { wsgiAction } from './python/wsgi.js'

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
