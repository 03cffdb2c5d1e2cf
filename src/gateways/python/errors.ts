/*
 * What a ProtocolError from the bridge codec means at the worker connection (docs/errors.md,
 * "How errors are made"): whichever rule a worker's frame broke, the worker broke the bridge
 * protocol (502); the connection is dropped and the worker recycled.
 */
import { type ErrorCode, GatehouseError, isProtocolError } from '../../core/errors.js'
import type { BridgeErrorCode } from './codec.js'

const FROM_WORKER: Record<BridgeErrorCode, ErrorCode> = {
  BRIDGE_BAD_MARSHAL: 'GH_ERR_WORKER_PROTOCOL',
  BRIDGE_BAD_VALUE: 'GH_ERR_WORKER_PROTOCOL',
  BRIDGE_BAD_FRAME: 'GH_ERR_WORKER_PROTOCOL',
  BRIDGE_UNKNOWN_FRAME: 'GH_ERR_WORKER_PROTOCOL',
  BRIDGE_EMPTY_FRAME: 'GH_ERR_WORKER_PROTOCOL',
  BRIDGE_FRAME_TOO_LARGE: 'GH_ERR_WORKER_PROTOCOL',
  BRIDGE_TRUNCATED: 'GH_ERR_WORKER_PROTOCOL',
}

/** A bridge ProtocolError as the GatehouseError it is for the request; anything else as it is. */
export function workerError(err: unknown): unknown {
  if (!isProtocolError(err, 'bridge')) return err
  const code = FROM_WORKER[err.code as BridgeErrorCode] ?? 'GH_ERR_WORKER_PROTOCOL'
  return new GatehouseError(code, err.message, { cause: err })
}
