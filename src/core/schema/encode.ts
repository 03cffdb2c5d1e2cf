/*
 * The `encode` key (compression on the fly), top level and per route: its schema lives with
 * the config kit; what it does is src/http/encode.ts.
 */
import { z } from 'zod'
import { strictObject } from './strict.js'
import { size } from './units.js'

const MEDIA_PATTERN = z
  .string()
  .transform((t) => t.trim().toLowerCase())
  .refine((t) => /^[a-z0-9*][a-z0-9!#$&^_.+*-]*\/[a-z0-9*][a-z0-9!#$&^_.+*-]*$/.test(t), {
    message: 'a media type such as "text/html", "text/*" or "application/*+json"',
  })

function encodeTableSchema() {
  return strictObject({
    /** Offer gzip (default true). */
    gzip: z.boolean().optional(),
    /** Offer brotli (default true). */
    br: z.boolean().optional(),
    /** Offer zstd where Node has it (22.15+; default true there, never on Node 20). */
    zstd: z.boolean().optional(),
    /** Responses with a smaller Content-Length are sent as they are (default 1 KiB). */
    min_length: size.optional(),
    /** Media types coded (parameters ignored; `*` matches within a part). */
    types: z.array(MEDIA_PATTERN).min(1).optional(),
    gzip_level: z.number().int().min(1).max(9).optional(),
    br_level: z.number().int().min(0).max(11).optional(),
    zstd_level: z.number().int().min(1).max(19).optional(),
  })
}

/**
 * `encode = true`, `encode = false` or a table: top level (the server-wide default) and per
 * route (over the top-level table, key by key; `false` turns it off for the route).
 */
export function encodeSchema() {
  return z.union([z.boolean(), encodeTableSchema()])
}

export type EncodeConfig = z.output<ReturnType<typeof encodeSchema>>
