/*
 * A fixed short response with no I/O behind it: Gatehouse's `return` action against
 * nginx's `return`. This is the floor of each server's per-request cost (parse, route,
 * write headers and body).
 */
import { nginxPeer } from '../peers/nginx.js'
import type { Scenario } from '../scenario.js'

export const returnScenarios: Scenario[] = [
  {
    name: 'return',
    description: 'GET /hello: `return 200 "hello"` (Gatehouse return action vs nginx return)',
    path: '/hello',
    gatehouse: () => ({
      config: { routes: [{ exact: '/hello', return: { status: 200, body: 'hello' } }] },
    }),
    peer: nginxPeer({ server: () => '    location = /hello { return 200 "hello"; }' }),
  },
]
