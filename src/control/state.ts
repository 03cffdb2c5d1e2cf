/*
 * The configuration the control API changes (docs/control-api.md): the input as given (the
 * config file's shape), applied through Gatehouse.reload, the one apply path SIGHUP also
 * takes, and kept in a state file so that a restart comes back as it was.
 */
import { createHash } from 'node:crypto'
import { mkdirSync, readFileSync, renameSync, statSync, unlinkSync, writeFileSync } from 'node:fs'
import { homedir } from 'node:os'
import { basename, dirname, extname, join } from 'node:path'
import type { Logger } from 'pino'
import { loadConfigGateways, validateConfig } from '../config.js'
import { GatehouseError } from '../core/errors.js'
import type { Gatehouse } from '../gatehouse.js'
import type { Json } from './config-tree.js'

/** The environment variable that holds the control API's bearer token (kept out of the config). */
export const TOKEN_ENV = 'GATEHOUSE_CONTROL_TOKEN'

/** What the state file holds (JSON). */
interface StateFile {
  gatehouse_state: 1
  saved_at: string
  /** The directory relative paths of `config` resolve against (the config file's). */
  base_dir: string
  /** The fingerprint of the configuration built from the config file and flags at start. */
  base: string
  config: { [key: string]: Json }
}

/** A configuration's fingerprint: sha256 of its JSON. */
export function fingerprint(input: unknown): string {
  return createHash('sha256').update(JSON.stringify(input)).digest('hex')
}

/**
 * Where the state file is: `control.state`; else next to the config file (`gatehouse.toml`
 * -> `gatehouse.state.json`); else, started from flags, in the state directory: systemd's
 * $STATE_DIRECTORY, else $XDG_STATE_HOME/gatehouse, else ~/.local/state/gatehouse.
 */
export function stateFilePath(
  control: { state?: string | undefined },
  configFile: string | undefined,
  env: NodeJS.ProcessEnv = process.env,
): string {
  if (control.state !== undefined) return control.state
  if (configFile !== undefined)
    return join(dirname(configFile), `${basename(configFile, extname(configFile))}.state.json`)
  const systemd = env.STATE_DIRECTORY?.split(':')[0]
  const dir = systemd
    ? systemd
    : join(env.XDG_STATE_HOME || join(env.HOME || homedir(), '.local', 'state'), 'gatehouse')
  return join(dir, 'gatehouse.state.json')
}

export interface StartConfig {
  input: { [key: string]: Json }
  baseDir: string
  /** Which configuration serves: the state file's, or the config file and flags. */
  from: 'state' | 'config'
  /** Why, for the log line. */
  reason: string
}

/**
 * The configuration to start with. A state file is used when it is newer than the config
 * file (started with one), or, started from flags alone, when it was made from the same
 * flags (a server started with other flags is another server); otherwise the config file
 * and flags win.
 */
export function startConfig(
  base: { [key: string]: Json },
  baseDir: string,
  stateFile: string,
  configFile: string | undefined,
): StartConfig {
  const fromBase = (reason: string): StartConfig => ({ input: base, baseDir, from: 'config', reason })
  let saved: StateFile
  let savedAt: number
  try {
    savedAt = statSync(stateFile).mtimeMs
    saved = JSON.parse(readFileSync(stateFile, 'utf8')) as StateFile
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return fromBase('no state file')
    return fromBase(`the state file cannot be read (${(err as Error).message})`)
  }
  if (saved?.gatehouse_state !== 1 || typeof saved.config !== 'object' || typeof saved.base_dir !== 'string')
    return fromBase('the state file is not a Gatehouse state file')
  if (configFile !== undefined) {
    if (savedAt <= statSync(configFile).mtimeMs)
      return fromBase('the config file is newer than the state file')
  } else if (saved.base !== fingerprint(base))
    return fromBase('the flags differ from those the state file was made with')
  return {
    input: saved.config,
    baseDir: saved.base_dir,
    from: 'state',
    reason:
      configFile !== undefined
        ? 'the state file is newer than the config file'
        : 'the state file was made with the same flags',
  }
}

/** A change to the configuration: the current input -> the next one (throws to refuse). */
export type ConfigEdit = (current: Json) => Json

/**
 * The serving configuration as given, and the one way to change it: `apply` validates the
 * whole result with the config schema (GH_ERR_CONFIG and every problem when it fails, and
 * nothing changes), applies it with Gatehouse.reload, then writes the state file. Changes
 * run one at a time, each on the result of the one before.
 */
export class ConfigStore {
  private current: Json
  private queue: Promise<unknown> = Promise.resolve()
  /** Called after each change that serves (the CLI points --reload's watcher at the apps' new directories). */
  onApplied: (() => void) | null = null

  constructor(
    private readonly gatehouse: Gatehouse,
    input: Json,
    private readonly baseDir: string,
    /** Undefined: nothing is saved (no control API). */
    private readonly stateFile: string | undefined,
    /** The fingerprint of the start's config file and flags, kept in the state file. */
    private readonly base: string,
    private readonly log: Logger,
  ) {
    this.current = structuredClone(input)
  }

  /** The configuration as given (not a copy: do not change it). */
  get input(): Json {
    return this.current
  }

  /** Apply `edit` to the current configuration (after the changes queued before it). */
  apply(edit: ConfigEdit, source: string): Promise<void> {
    const run = this.queue.then(() => this.applyNow(edit, source))
    this.queue = run.catch(() => {})
    return run
  }

  private async applyNow(edit: ConfigEdit, source: string): Promise<void> {
    const next = edit(this.current)
    // Validated here first: a refused change never reaches the server. A change may name a
    // gateway the server has not loaded yet (a wsgi route added to a static-only server).
    await loadConfigGateways(next, this.baseDir)
    validateConfig(next, this.baseDir)
    const before = this.gatehouse.config
    let applied: boolean
    try {
      // Pools whose settings did not change keep their workers (a SIGHUP rolls them).
      applied = await this.gatehouse.reload(next as Parameters<Gatehouse['reload']>[0], this.baseDir, {
        rollKept: false,
      })
    } catch (err) {
      // Past the switch (a new listen address could not be opened): it serves, say so.
      if (this.gatehouse.config !== before) {
        this.current = next
        this.save()
        throw err
      }
      throw new GatehouseError('GH_ERR_CONTROL_APPLY', (err as Error).message, { cause: err })
    }
    if (!applied)
      throw new GatehouseError(
        'GH_ERR_CONTROL_APPLY',
        'a newer configuration or the server stopping came first',
      )
    this.warnIfControlChanged(next)
    this.current = next
    this.log.debug({ source }, 'configuration applied')
    this.onApplied?.()
    this.save()
  }

  /**
   * SIGHUP: the whole configuration replaced by the config file's, at once (not queued behind
   * API changes: like overlapping SIGHUPs, the newest reload wins and one still starting is
   * superseded). Resolves false when a newer reload superseded it.
   */
  async replace(input: Json): Promise<boolean> {
    await loadConfigGateways(input, this.baseDir)
    validateConfig(input, this.baseDir)
    if (!(await this.gatehouse.reload(input as Parameters<Gatehouse['reload']>[0], this.baseDir)))
      return false
    this.warnIfControlChanged(input)
    this.current = structuredClone(input)
    this.onApplied?.()
    this.save()
    return true
  }

  /** The control API keeps the address, token and mode it started with (as limits.max_header_bytes does). */
  private warnIfControlChanged(next: Json): void {
    const control = (config: Json) => JSON.stringify((config as { control?: Json }).control ?? null)
    if (control(next) !== control(this.current))
      this.log.warn('control changes take effect on restart; the control API listens as before')
  }

  /** Write the state file atomically: a temporary file (mode 0600: it may hold a token) renamed over it. */
  private save(): void {
    if (this.stateFile === undefined) return
    const content: StateFile = {
      gatehouse_state: 1,
      saved_at: new Date().toISOString(),
      base_dir: this.baseDir,
      base: this.base,
      config: this.current as StateFile['config'],
    }
    const tmp = `${this.stateFile}.${process.pid}.tmp`
    try {
      mkdirSync(dirname(this.stateFile), { recursive: true, mode: 0o700 })
      writeFileSync(tmp, `${JSON.stringify(content, null, 2)}\n`, { mode: 0o600 })
      renameSync(tmp, this.stateFile)
    } catch (err) {
      try {
        unlinkSync(tmp)
      } catch {
        // Never written.
      }
      this.log.error({ err, state: this.stateFile }, 'cannot write the state file')
      throw new GatehouseError('GH_ERR_CONTROL_STATE', `${this.stateFile}: ${(err as Error).message}`, {
        cause: err,
      })
    }
  }
}
