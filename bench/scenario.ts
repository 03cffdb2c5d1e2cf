/*
 * The contract between the runner and a scenario. A scenario family is one file under
 * bench/scenarios/ exporting Scenario objects; bench/scenarios/index.ts lists them. A new
 * comparison (CGI vs fcgiwrap, PHP vs php-fpm, WSGI vs uWSGI, ...) is one such file plus
 * one line in the registry: the runner owns ports, temp dirs, readiness, wrk, RSS
 * sampling, alternation, cleanup and reporting.
 */
import type { GatehouseConfigInput } from '../src/config.js'
import type { ServerHandle } from './processes.js'

export type { ServerHandle } from './processes.js'

/**
 * How Gatehouse is started for a scenario: a config object (the schema's input side,
 * written to a TOML file and passed as `serve --config FILE`) or `serve` flags. Either
 * way the runner supplies the listen address; `listen` must not be given here.
 */
export type GatehouseSide =
  | { config: Omit<GatehouseConfigInput, 'listen'>; args?: undefined }
  | { args: readonly string[]; config?: undefined }

export interface PeerDefinition {
  /** Short name shown in the table, e.g. "nginx". */
  readonly name: string
  /** A reason this peer cannot run here (missing binary, ...), or undefined when it can. */
  unavailable?(): string | undefined
  /**
   * Start the peer listening on 127.0.0.1:`port`, serving what `prepare` put in `tmpDir`.
   * It may return before the port accepts; the runner waits for it.
   */
  start(tmpDir: string, port: number): Promise<ServerHandle>
}

/**
 * A server both sides talk to (php-fpm behind Gatehouse and behind nginx): started once,
 * before either side, and stopped after both. Its memory is counted on neither side.
 */
export interface BackendDefinition {
  /** Short name for messages, e.g. "php-fpm". */
  readonly name: string
  /** A reason it cannot run here (missing binary, ...), or undefined when it can. */
  unavailable?(): string | undefined
  /** Start it serving what `prepare` put in `tmpDir`; resolves once it accepts connections. */
  start(tmpDir: string): Promise<ServerHandle>
}

export interface Scenario {
  /** Name on the command line and in the table: lowercase, no spaces. */
  readonly name: string
  /** One line saying what is measured, for --list and the docs. */
  readonly description: string
  /**
   * Over TLS with the same certificate on both sides (bench/tls.ts): `https` is HTTP/1.1
   * measured with wrk, `h2` is HTTP/2 measured with h2load (bench/h2load.ts). Default: plain HTTP.
   */
  readonly transport?: 'https' | 'h2'
  /** Request path (with query, if any) that wrk requests from both sides. */
  readonly path: string
  /**
   * Write the files both sides serve into `tmpDir` (a fresh directory per scenario run,
   * mode 0755, readable by an unprivileged nginx worker; write files 0644).
   */
  prepare?(tmpDir: string): void | Promise<void>
  gatehouse(tmpDir: string): GatehouseSide | Promise<GatehouseSide>
  readonly peer: PeerDefinition
  /** A shared backend, started after `prepare` and before both sides. */
  readonly backend?: BackendDefinition
}
