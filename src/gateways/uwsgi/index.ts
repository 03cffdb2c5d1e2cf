/**
 * uwsgi both ways (docs/uwsgi.md): the `uwsgi` action passes requests to a uwsgi server,
 * `uwsgi_listen` accepts them from a web server.
 */
import type { GatewayDefinition } from '../../core/types.js'
import { uwsgiAction } from './action.js'
import { uwsgiListener } from './listen.js'

export const uwsgiGateway = {
  name: 'uwsgi',
  actions: { uwsgi: uwsgiAction },
  listener: uwsgiListener,
} satisfies GatewayDefinition
