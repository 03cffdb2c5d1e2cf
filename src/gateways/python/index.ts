/** Python apps in managed workers: the `wsgi` and `asgi` actions (docs/wsgi.md, docs/asgi.md). */
import type { GatewayDefinition } from '../../core/types.js'
import { asgiAction } from './asgi.js'
import { wsgiAction } from './wsgi.js'

export const pythonGateway = {
  name: 'python',
  actions: { wsgi: wsgiAction, asgi: asgiAction },
} satisfies GatewayDefinition
