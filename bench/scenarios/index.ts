/*
 * The scenario registry. A new scenario family is a file next to this one exporting
 * Scenario objects, and one line below; `npm run bench` with no names runs them all, in
 * this order.
 */
import type { Scenario } from '../scenario.js'
import { asgiScenarios } from './asgi.js'
import { cgiScenarios } from './cgi.js'
import { phpScenarios } from './php.js'
import { phpPoolScenarios } from './php-pool.js'
import { proxyScenarios } from './proxy.js'
import { returnScenarios } from './return.js'
import { staticScenarios } from './static.js'
import { uwsgiScenarios } from './uwsgi.js'
import { wsgiScenarios } from './wsgi.js'

export const SCENARIOS: readonly Scenario[] = [
  ...staticScenarios,
  ...returnScenarios,
  ...cgiScenarios,
  ...phpScenarios,
  ...phpPoolScenarios,
  ...uwsgiScenarios,
  ...wsgiScenarios,
  ...asgiScenarios,
  ...proxyScenarios,
]
