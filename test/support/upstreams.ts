/*
 * Helpers of the upstream group tests (test/gateways/php/upstreams.test.ts,
 * test/gateways/uwsgi/upstreams.test.ts): a GET, the status page's view of a group, and a
 * keep-alive load during which a server is stopped.
 */
import { type Agent, request } from 'undici'
import { eventually } from './helpers.js'

export async function get(origin: string, path: string, dispatcher?: Agent) {
  const res = await request(`${origin}${path}`, dispatcher ? { dispatcher } : {})
  return { status: res.statusCode, body: await res.body.text(), headers: res.headers }
}

export interface ServerView {
  address: string
  state: string
  active: number
  requests: number
  failures: number
  checks: number
}

/** The servers of group `name` (default: the first) on the `show = "upstreams"` page at /upstreams. */
export async function upstreamServers(origin: string, name?: string): Promise<ServerView[]> {
  const page = JSON.parse((await get(origin, '/upstreams')).body) as {
    upstreams: { name: string; servers: ServerView[] }[]
  }
  return (name === undefined ? page.upstreams[0] : page.upstreams.find((g) => g.name === name))!.servers
}

/**
 * Six clients in keep-alive loops of GETs of `path`; once 60 requests went, `disrupt()` (stop
 * a server), then 100 more, then the clients stop (3000 requests at most). Resolves with the
 * count of each status.
 */
export async function loadWhile(
  origin: string,
  path: string,
  agent: Agent,
  disrupt: () => Promise<void>,
): Promise<Map<number, number>> {
  const statuses = new Map<number, number>()
  let stopped = false
  let sent = 0
  const client = async () => {
    while (!stopped && sent < 3000) {
      sent++
      const r = await get(origin, path, agent)
      statuses.set(r.status, (statuses.get(r.status) ?? 0) + 1)
    }
  }
  const clients = Array.from({ length: 6 }, client)
  try {
    await eventually(() => sent > 60, 'requests under way')
    await disrupt()
    const after = sent
    await eventually(() => sent > after + 100, 'requests after the disruption')
  } finally {
    stopped = true
    await Promise.all(clients)
  }
  return statuses
}
