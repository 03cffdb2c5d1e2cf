/** Static files: the `static` action (docs/static.md). */
import type { GatewayDefinition } from '../../core/types.js'
import { staticAction } from './action.js'

export const staticGateway = {
  name: 'static',
  actions: { static: staticAction },
} satisfies GatewayDefinition
