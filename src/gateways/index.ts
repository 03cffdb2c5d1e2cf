/**
 * Every gateway Gatehouse knows, one entry each. Adding a gateway is a folder under
 * src/gateways/ whose index.ts exports its GatewayDefinition, plus an entry here: the config
 * schema, `gatehouse check`, the router and the server's listeners pick it up from there.
 * The order is the order of the route actions in messages (`a route needs one action: ...`).
 *
 * A gateway's module (its schemas, handlers, pools, codecs and npm dependencies) is loaded
 * only when a configuration uses it (issue 13 item 4: a static-only server held 83-95 MB
 * because every gateway was imported at start). The catalog names each gateway's route
 * actions and top-level config keys without loading it; `loadGatewaysFor(input)` imports
 * those a config names, and the synchronous users (validateConfig, the Gatehouse
 * constructor) see the gateways loaded so far. The library entry (src/index.ts) loads all
 * of them through gateways/all.ts, so `createGatehouse()` stays synchronous.
 */
import type { ActionAt, ActionDefinition, ActionKey, GatewayDefinition } from '../core/types.js'
import type { cgiGateway } from './cgi/index.js'
import type { fastcgiGateway } from './fastcgi/index.js'
import type { phpGateway } from './php/index.js'
import type { proxyGateway } from './proxy/index.js'
import type { pythonGateway } from './python/index.js'
import type { returnGateway } from './return/index.js'
import type { staticGateway } from './static/index.js'
import type { statusGateway } from './status/index.js'
import type { uwsgiGateway } from './uwsgi/index.js'

/** Every gateway's definition type, in catalog order: the config's types are derived from it. */
export type Gateways = readonly [
  typeof staticGateway,
  typeof returnGateway,
  typeof uwsgiGateway,
  typeof cgiGateway,
  typeof fastcgiGateway,
  typeof phpGateway,
  typeof statusGateway,
  typeof pythonGateway,
  typeof proxyGateway,
]

type Gateway = Gateways[number]

export type ActionName = ActionKey<Gateway>

interface CatalogEntry {
  name: Gateway['name']
  /** The route keys of its actions. */
  actions: readonly ActionName[]
  /** The top-level config keys of its listener (`uwsgi_listen`, ...). */
  keys: readonly string[]
  load(): Promise<GatewayDefinition>
}

/** What each gateway adds to a config, and how to load it; test/gateways/index.test.ts checks it against the modules. */
export const CATALOG: readonly CatalogEntry[] = [
  {
    name: 'static',
    actions: ['static'],
    keys: [],
    load: () => import('./static/index.js').then((m) => m.staticGateway),
  },
  {
    name: 'return',
    actions: ['return'],
    keys: [],
    load: () => import('./return/index.js').then((m) => m.returnGateway),
  },
  {
    name: 'uwsgi',
    actions: ['uwsgi'],
    keys: ['uwsgi_listen', 'uwsgi_allow', 'uwsgi_max_vars_bytes', 'uwsgi_body_timeout'],
    load: () => import('./uwsgi/index.js').then((m) => m.uwsgiGateway),
  },
  { name: 'cgi', actions: ['cgi'], keys: [], load: () => import('./cgi/index.js').then((m) => m.cgiGateway) },
  {
    name: 'fastcgi',
    actions: ['fastcgi'],
    keys: [
      'fastcgi_listen',
      'fastcgi_allow',
      'fastcgi_max_params_bytes',
      'fastcgi_idle_timeout',
      'fastcgi_body_timeout',
      'fastcgi_max_connections',
    ],
    load: () => import('./fastcgi/index.js').then((m) => m.fastcgiGateway),
  },
  { name: 'php', actions: ['php'], keys: [], load: () => import('./php/index.js').then((m) => m.phpGateway) },
  {
    name: 'status',
    actions: ['status', 'metrics'],
    keys: [],
    load: () => import('./status/index.js').then((m) => m.statusGateway),
  },
  {
    name: 'python',
    actions: ['wsgi', 'asgi'],
    keys: [],
    load: () => import('./python/index.js').then((m) => m.pythonGateway),
  },
  {
    name: 'proxy',
    actions: ['proxy'],
    keys: [],
    load: () => import('./proxy/index.js').then((m) => m.proxyGateway),
  },
]

/** Every route action's name, loaded or not, in catalog order. */
export const ACTION_NAMES: readonly ActionName[] = CATALOG.flatMap((g) => g.actions)

const loaded = new Map<string, GatewayDefinition>()

/** Make loaded gateways known to the synchronous users (gateways/all.ts does it for all of them). */
export function registerGateways(gateways: readonly GatewayDefinition[]): void {
  for (const g of gateways) loaded.set(g.name, g)
}

/** The gateways loaded so far, in catalog order. */
export function loadedGateways(): GatewayDefinition[] {
  return CATALOG.flatMap((entry) => loaded.get(entry.name) ?? [])
}

/** The action `name` of a loaded gateway, or undefined while its gateway is not loaded. */
export function loadedAction(name: ActionName): ActionAt<Gateway, typeof name> | undefined {
  for (const g of loaded.values()) {
    const action = g.actions?.[name]
    if (action) return action as ActionAt<Gateway, typeof name>
  }
  return undefined
}

/** The action `name`, whose gateway must be loaded (the config that names it was validated). */
export function actionDefinition(name: ActionName): ActionDefinition<unknown> {
  const action = loadedAction(name)
  if (!action) throw new Error(`the gateway of the '${name}' action is not loaded`)
  return action as ActionDefinition<unknown>
}

/**
 * The gateways a raw config object names: those of its routes' action keys and of its
 * top-level listener keys. Anything else (a typo, a wrong type) is left to the schema.
 */
export function gatewaysNamedBy(input: unknown): string[] {
  if (typeof input !== 'object' || input === null) return []
  const top = input as Record<string, unknown>
  const routes = Array.isArray(top.routes) ? (top.routes as unknown[]) : []
  const routeKeys = new Set(
    routes.flatMap((r) => (typeof r === 'object' && r !== null ? Object.keys(r) : [])),
  )
  // A route's `sendfile` (X-Sendfile) serves its files with the static gateway's code.
  if (routeKeys.has('sendfile')) routeKeys.add('static')
  return CATALOG.filter(
    (g) => g.actions.some((a) => routeKeys.has(a)) || g.keys.some((k) => top[k] !== undefined),
  ).map((g) => g.name)
}

/** The gateways of `names` not loaded yet (synchronous users check this before validating). */
export function missingGateways(names: readonly string[]): string[] {
  return names.filter((n) => !loaded.has(n))
}

/** Load the gateways a raw config object names (gatewaysNamedBy), once each. */
export async function loadGatewaysFor(input: unknown): Promise<void> {
  await loadGateways(gatewaysNamedBy(input))
}

/** Load these gateways (by name), once each. */
export async function loadGateways(names: readonly string[]): Promise<void> {
  const wanted = CATALOG.filter((g) => names.includes(g.name) && !loaded.has(g.name))
  registerGateways(await Promise.all(wanted.map((g) => g.load())))
}
