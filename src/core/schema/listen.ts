/*
 * Schema pieces shared by the gateway listeners' top-level keys (`uwsgi_listen`,
 * `fastcgi_listen` and their allow-lists).
 */
import { z } from 'zod'
import { parseAllowList } from '../allow-list.js'
import { parseListenAddress } from '../address.js'

const LISTEN = z.string().superRefine((value, ctx) => {
  try {
    parseListenAddress(value)
  } catch (err) {
    ctx.addIssue({ code: 'custom', message: (err as Error).message })
  }
})

const ALLOW_ENTRY = z.string().superRefine((value, ctx) => {
  try {
    parseAllowList([value])
  } catch (err) {
    ctx.addIssue({ code: 'custom', message: (err as Error).message })
  }
})

/** One listen address or a list of them (always a list after parsing); default none. */
export const listenAddresses = () =>
  z
    .union([LISTEN, z.array(LISTEN)])
    .transform((v) => (Array.isArray(v) ? v : [v]))
    .default([])

/** An allow-list of addresses and CIDR blocks. */
export const allowList = (defaults: readonly string[]) => z.array(ALLOW_ENTRY).default([...defaults])
