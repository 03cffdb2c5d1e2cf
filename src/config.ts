/**
 * The configuration of this build: config/ (the schema kit, the file reader) applied to
 * the gateways (src/gateways/index.ts). The config's types live here, where the gateways
 * are known; config/ itself knows no gateway.
 */
import type { z } from 'zod'
import { parseConfig, readConfigFile } from './config/load.js'
import { configSchema } from './config/schema.js'
import { GatehouseError } from './core/errors.js'
import type { SchemaEnv } from './core/types.js'
import {
  CATALOG,
  type Gateways,
  gatewaysNamedBy,
  loadedGateways,
  loadGateways,
  loadGatewaysFor,
  missingGateways,
} from './gateways/index.js'

/**
 * The config schema with the loaded gateways' actions and listeners (every gateway's in
 * the types; at run time, those loaded: all of them through the library entry).
 */
export function gatehouseSchema(env: SchemaEnv) {
  return configSchema(env, loadedGateways() as unknown as Gateways)
}

export type GatehouseConfig = z.output<ReturnType<typeof gatehouseSchema>>
/** What a config file, the CLI or the library may give: the schema's input side. */
export type GatehouseConfigInput = z.input<ReturnType<typeof gatehouseSchema>>
export type RouteConfig = GatehouseConfig['routes'][number]
export type LimitsConfig = GatehouseConfig['limits']

/**
 * Validate a config object (from a file, CLI flags or library options) against the one
 * schema. Every problem is reported at once in GatehouseError.problems; the result is frozen.
 */
export function validateConfig(input: unknown, baseDir: string = process.cwd()): GatehouseConfig {
  const missing = missingGateways(gatewaysNamedBy(input))
  // Only internal callers can get here (src/index.ts loads every gateway): a config checked
  // without a gateway it names would call its keys unknown.
  if (missing.length > 0)
    throw new GatehouseError(
      'GH_ERR_CONFIG',
      `gateways not loaded: ${missing.join(', ')} (await loadConfigGateways(input) first)`,
    )
  return parseConfig(gatehouseSchema({ baseDir }), input)
}

/**
 * Load the gateways a raw config object names, so that validateConfig can check it. A config
 * with a problem gets every gateway, so that its messages are those of the whole build (a
 * misspelt action's hint, the list of actions a route may have).
 */
export async function loadConfigGateways(input: unknown, baseDir: string = process.cwd()): Promise<void> {
  await loadGatewaysFor(input)
  if (!gatehouseSchema({ baseDir }).safeParse(input).success) await loadGateways(CATALOG.map((g) => g.name))
}

/** Read and validate a config file. */
export function loadConfigFile(file: string): GatehouseConfig {
  const { input, baseDir } = readConfigFile(file)
  return validateConfig(input, baseDir)
}
