/*
 * A route action as a plain node:http request listener, for library users:
 * `createServer(php({ root, fastcgi }))`, Express, Fastify's raw handler. Options are the
 * config file's keys, validated by the action's schema (relative paths resolve against the
 * working directory), plus where the listener is mounted.
 */
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Logger } from 'pino'
import pino from 'pino'
import type { z } from 'zod'
import { formatPath } from '../core/schema/issues.js'
import { size } from '../core/schema/units.js'
import { GatehouseError } from '../core/errors.js'
import { toRequestListener } from './context.js'
import type { Handler, SchemaEnv } from '../core/types.js'

export interface ListenerOptions {
  /** URL prefix the handler is mounted at (the start of SCRIPT_NAME). Default "/". */
  prefix?: string
  /** Largest request body accepted (bytes, or "10MB"). Default 1 GiB (limits.max_body_bytes). */
  max_body_bytes?: number | string
  /** Where upstream stderr and failures are logged. Default: pino at level warn on stdout. */
  log?: Logger
}

export type RequestListener<H extends Handler> = ((req: IncomingMessage, res: ServerResponse) => void) & {
  handler: H
  /** Close the handler's pools (requests in flight finish first). */
  close(): Promise<void>
}

/** Validate `options` with `schema` (GH_ERR_CONFIG lists every problem) and wrap the handler. */
export function actionListener<Options, H extends Handler & { close(): Promise<void> }>(
  schema: (env: SchemaEnv) => z.ZodType<Options>,
  options: ListenerOptions & object,
  create: (options: Options, log: Logger) => H,
): RequestListener<H> {
  const { prefix, max_body_bytes, log, ...rest } = options as ListenerOptions & Record<string, unknown>
  const problems: string[] = []
  const parsed = schema({ baseDir: process.cwd() }).safeParse(rest)
  if (!parsed.success) problems.push(...parsed.error.issues.map((i) => `${formatPath(i.path)}: ${i.message}`))
  const maxBody = max_body_bytes === undefined ? undefined : size.safeParse(max_body_bytes)
  if (maxBody && !maxBody.success) problems.push(`max_body_bytes: ${maxBody.error.issues[0]?.message}`)
  if (prefix !== undefined && !/^\/[^?#\s]*$/.test(prefix)) problems.push('prefix: a path starting with "/"')
  if (!parsed.success || problems.length > 0) {
    throw new GatehouseError('GH_ERR_CONFIG', problems.join('; '), { problems })
  }
  const logger = log ?? pino({ level: 'warn' })
  const handler = create(parsed.data, logger)
  const listener = toRequestListener(handler, {
    log: logger,
    prefix: prefix ?? '/',
    ...(maxBody?.success ? { maxBodyBytes: maxBody.data } : {}),
  })
  return Object.assign(listener, { handler, close: () => handler.close() })
}
