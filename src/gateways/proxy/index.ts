/**
 * The HTTP reverse proxy (docs/proxy.md): the `proxy` action passes requests to an upstream
 * HTTP/1.1 server over kept-alive connections (undici).
 */
import type { GatewayDefinition } from '../../core/types.js'
import { proxyAction } from './action.js'

export const proxyGateway = {
  name: 'proxy',
  actions: { proxy: proxyAction },
} satisfies GatewayDefinition
