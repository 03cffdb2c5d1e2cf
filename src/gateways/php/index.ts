/** PHP front controllers over FastCGI, php-fpm or a managed php-cgi pool: the `php` action (docs/fastcgi.md). */
import type { GatewayDefinition } from '../../core/types.js'
import { phpAction } from './action.js'

export const phpGateway = {
  name: 'php',
  actions: { php: phpAction },
} satisfies GatewayDefinition
