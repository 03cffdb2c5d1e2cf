/** CGI/1.1 scripts: the `cgi` action (docs/cgi.md). */
import type { GatewayDefinition } from '../../core/types.js'
import { cgiAction } from './action.js'

export const cgiGateway = {
  name: 'cgi',
  actions: { cgi: cgiAction },
} satisfies GatewayDefinition
