/**
 * FastCGI both ways (docs/fastcgi.md): the `fastcgi` action passes requests to a FastCGI
 * server, `fastcgi_listen` accepts them from a web server.
 */
import type { GatewayDefinition } from '../../core/types.js'
import { fastcgiAction } from './action.js'
import { fastcgiListener } from './listen.js'

export const fastcgiGateway = {
  name: 'fastcgi',
  actions: { fastcgi: fastcgiAction },
  listener: fastcgiListener,
} satisfies GatewayDefinition
