/*
 * Who may connect to a gateway listener over TCP (the uwsgi and FastCGI listeners): an
 * allow-list of addresses and CIDR blocks, loopback by default. Unix-socket clients are
 * governed by the socket file's permissions instead.
 */
import { BlockList, isIP } from 'node:net'

export const LOOPBACK: readonly string[] = ['127.0.0.1', '::1']

/** Allow-list entries (`10.0.0.1`, `10.0.0.0/8`, `fd00::/8`) -> BlockList; throws an Error naming the first bad entry. */
export function parseAllowList(entries: readonly string[]): BlockList {
  const list = new BlockList()
  for (const entry of entries) {
    const [address, bits, extra] = entry.trim().split('/')
    const family = isIP(address ?? '')
    if (family === 0 || extra !== undefined)
      throw new Error(`not an IP address or CIDR block: ${JSON.stringify(entry)}`)
    const type = family === 4 ? 'ipv4' : 'ipv6'
    if (bits === undefined) {
      list.addAddress(address!, type)
      continue
    }
    const prefix = Number(bits)
    if (!/^\d{1,3}$/.test(bits) || prefix > (family === 4 ? 32 : 128))
      throw new Error(`bad prefix length in ${JSON.stringify(entry)}`)
    list.addSubnet(address!, prefix, type)
  }
  return list
}
