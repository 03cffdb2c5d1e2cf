/** php-fpm's status and ping pages for the managed pools: the `status` action (docs/process-manager.md). */
import type { GatewayDefinition } from '../../core/types.js'
import { metricsAction, statusAction } from './action.js'

export const statusGateway = {
  name: 'status',
  actions: { status: statusAction, metrics: metricsAction },
} satisfies GatewayDefinition
