/** Fixed responses and redirects: the `return` action (docs/routing.md). */
import type { GatewayDefinition } from '../../core/types.js'
import { returnAction } from './action.js'

export const returnGateway = {
  name: 'return',
  actions: { return: returnAction },
} satisfies GatewayDefinition
