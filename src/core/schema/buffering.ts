/*
 * The buffering keys of the gateways whose workers are synchronous (WSGI, the PHP pool,
 * php-fpm and other FastCGI servers, uwsgi, CGI): issue 18 item 3, docs/reliability.md.
 * Both directions are on by default, as nginx's proxy/fastcgi/uwsgi_(request_)buffering are.
 */
import { z } from 'zod'
import type { ResponseBufferOptions } from '../response-buffer.js'
import { size } from './units.js'

export const bufferingShape = {
  /**
   * Read the whole request body (memory, then a temporary file, up to max_body_bytes) before
   * a worker is taken: a slow upload holds no worker. false: stream it to the worker as it
   * arrives (chunked bodies are still read whole where the protocol needs a length).
   */
  request_buffering: z.boolean().default(true),
  /**
   * Take the response as fast as the app sends it, so its worker is free when the app is
   * done, whatever the client's pace. false: the app waits for the client (backpressure).
   */
  response_buffering: z.boolean().default(true),
  /** Response bytes held in memory per request before the rest goes to a temporary file. */
  response_buffer_memory: size.prefault('1MiB'),
  /**
   * Response bytes held in the temporary file before the app is made to wait for the client
   * (nginx's proxy_max_temp_file_size); 0: memory only.
   */
  response_max_temp_file_size: size.prefault('1GiB'),
}

export interface BufferingOptions {
  request_buffering: boolean
  response_buffering: boolean
  response_buffer_memory: number
  response_max_temp_file_size: number
}

/** The response buffer a route's options ask for; undefined when response buffering is off. */
export function responseBuffering(
  options: BufferingOptions,
  prefix?: string,
): ResponseBufferOptions | undefined {
  if (!options.response_buffering) return undefined
  return {
    memoryBytes: options.response_buffer_memory,
    maxFileBytes: options.response_max_temp_file_size,
    ...(prefix !== undefined ? { prefix } : {}),
  }
}
