/**
 * The configuration of this build: config/ (the schema kit, the file reader) applied to
 * GATEWAYS. The config's types live here, where the gateways are known; config/ itself
 * knows no gateway.
 */
import type { z } from 'zod'
import { parseConfig, readConfigFile } from './config/load.js'
import { configSchema } from './config/schema.js'
import type { SchemaEnv } from './core/types.js'
import { GATEWAYS } from './gateways/index.js'

/** The config schema with every gateway's actions and listeners. */
export function gatehouseSchema(env: SchemaEnv) {
  return configSchema(env, GATEWAYS)
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
  return parseConfig(gatehouseSchema({ baseDir }), input)
}

/** Read and validate a config file. */
export function loadConfigFile(file: string): GatehouseConfig {
  const { input, baseDir } = readConfigFile(file)
  return validateConfig(input, baseDir)
}
