/*
 * The active health probe of a uwsgi server in an upstream group: a GET of the group's
 * `health.path` (default `/`) over the uwsgi protocol, whose status must be in
 * `health.status` (default 200-399). docs/uwsgi.md, Upstream groups.
 */
import type { HealthCheckSpec, HealthProbe } from '../../core/upstream/index.js'
import { uwsgiCall } from './client.js'
import { buildUwsgiVars } from './vars.js'

export function uwsgiProbe(
  health: HealthCheckSpec,
  options: { modifier1: number; modifier2: number; server_name?: string | undefined; document_root: string },
): HealthProbe {
  const path = health.path ?? '/'
  const vars = buildUwsgiVars({
    method: 'GET',
    rawPath: path,
    query: '',
    path,
    httpVersion: '1.1',
    rawHeaders: ['User-Agent', 'gatehouse-health-check'],
    contentLength: undefined,
    scheme: 'http',
    remoteAddress: '127.0.0.1',
    remotePort: 0,
    serverPort: 80,
    serverName: options.server_name ?? 'localhost',
    documentRoot: options.document_root,
    params: [],
  })
  return async (server, signal) => {
    const res = await uwsgiCall(server.address, {
      vars,
      modifier1: options.modifier1,
      modifier2: options.modifier2,
      connectTimeout: health.timeout,
      timeout: health.timeout,
      signal,
    })
    res.body.resume()
    const ok =
      health.status.length > 0 ? health.status.includes(res.status) : res.status >= 200 && res.status < 400
    if (!ok) throw new Error(`health check ${path} answered ${res.status}`)
  }
}
