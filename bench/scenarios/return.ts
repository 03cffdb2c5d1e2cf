/*
 * A fixed short response with no I/O behind it: Gatehouse's `return` action against
 * nginx's `return`. This is the floor of each server's per-request cost (parse, route,
 * write headers and body).
 */
import { nginxPeer } from '../peers/nginx.js'
import { spawnServer } from '../processes.js'
import type { PeerDefinition, Scenario } from '../scenario.js'

/**
 * A bare `node:http` server answering `hello`: the physical limit of a front written on
 * node:http (issue 13), as a row of every run.
 */
const bareNodePeer: PeerDefinition = {
  name: 'node:http',
  start: async (_tmpDir, port) =>
    spawnServer(
      process.execPath,
      [
        '-e',
        `require('node:http').createServer((q, s) => { s.writeHead(200, { 'content-type': 'text/plain; charset=utf-8', 'content-length': 5 }); s.end('hello') }).listen(${port}, '127.0.0.1')`,
      ],
      { graceMs: 2000 },
    ),
}

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
  {
    name: 'return-node',
    description:
      "GET /hello: Gatehouse `return` vs a bare node:http hello server (the front's physical limit)",
    path: '/hello',
    gatehouse: () => ({
      config: { routes: [{ exact: '/hello', return: { status: 200, body: 'hello' } }] },
    }),
    peer: bareNodePeer,
  },
  {
    name: 'return-fronts',
    description:
      'GET /hello: Gatehouse `return` with front_processes = 2 (two front threads) vs nginx return (2 workers)',
    path: '/hello',
    gatehouse: () => ({
      config: { front_processes: 2, routes: [{ exact: '/hello', return: { status: 200, body: 'hello' } }] },
    }),
    peer: nginxPeer({ server: () => '    location = /hello { return 200 "hello"; }' }),
  },
]
