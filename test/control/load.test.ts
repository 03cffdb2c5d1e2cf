/*
 * The control API under load (issue 16, "Done means"): clients keep three routes busy over
 * keep-alive connections while 50 changes go through the API one after another: a route
 * added, then removed, a WSGI pool's `workers` changed, that pool replaced by another app.
 * No request to the routes that stayed may fail (a non-2xx, a reset, a cut response), each
 * change serves as soon as the API has answered, and the WSGI pool whose settings never
 * changed keeps its workers throughout. No timing threshold: deadlines only catch a hang.
 */
import assert from 'node:assert/strict'
import { writeFileSync } from 'node:fs'
import { Agent } from 'node:http'
import { join } from 'node:path'
import { test } from 'node:test'
import { curl, serveWithControl } from '../support/control.js'
import { agentGet, FIXTURES, PYTHON, tempDir } from '../support/helpers.js'

const WSGI_DIR = join(FIXTURES, 'wsgi')
const CHANGES = 50
const CLIENTS_PER_PATH = 2

const wsgi = (app: string, workers: number) => ({
  app,
  chdir: WSGI_DIR,
  python: PYTHON,
  workers,
})

test(
  `${CHANGES} changes through the control API under load: no failed request on the routes that stayed, the unchanged pool keeps its workers`,
  { timeout: 240_000 },
  async (t) => {
    const dir = tempDir(t, 'gh-control-load-')
    const config = {
      listen: ['127.0.0.1:0'],
      control: 'unix:./control.sock',
      routes: [
        { exact: '/stay', return: { status: 200, body: 'stay' } },
        { path: '/app', wsgi: wsgi('apps:application', 2) },
        { path: '/scaled', wsgi: wsgi('apps:application', 1) },
      ],
    }
    writeFileSync(join(dir, 'gatehouse.json'), JSON.stringify(config))
    const { control, port } = await serveWithControl(t, dir, ['--config', 'gatehouse.json'])
    const agent = new Agent({ keepAlive: true, maxSockets: 3 * CLIENTS_PER_PATH })
    t.after(() => agent.destroy())

    let loading = true
    let sent = 0
    const failures: string[] = []
    const appPids = new Set<string>()
    const paths = ['/stay', '/app/pid', '/scaled/']
    const clients = paths.flatMap((path) =>
      Array.from({ length: CLIENTS_PER_PATH }, async () => {
        while (loading) {
          sent++
          const r = await agentGet(agent, port, path)
          if (r.status < 200 || r.status > 299)
            failures.push(`${path}: ${r.status} ${r.error ?? r.body.slice(0, 200)}`)
          else if (path === '/app/pid') appPids.add(r.body)
        }
      }),
    )

    const change = async (method: string, path: string, body?: unknown) => {
      const answer = await curl(
        control,
        method,
        path,
        body === undefined ? {} : { body: JSON.stringify(body) },
      )
      assert.equal(answer.status, 200, `${method} ${path}: ${answer.body}`)
      return answer.json as { path: string }
    }
    const kinds = new Map<string, number>()
    for (let i = 0; i < CHANGES; i++) {
      const kind = ['add a route', 'remove it', "change a pool's workers", 'replace a pool'][i % 4]!
      kinds.set(kind, (kinds.get(kind) ?? 0) + 1)
      if (i % 4 === 0) {
        const { path } = await change('POST', '/config/routes', {
          exact: `/added-${i}`,
          return: { status: 200, body: `added ${i}` },
        })
        assert.equal(path, '/config/routes/3')
        // Serving once the API has answered.
        assert.deepEqual(await agentGet(agent, port, `/added-${i}`), { status: 200, body: `added ${i}` })
      } else if (i % 4 === 1) {
        await change('DELETE', '/config/routes/3')
        assert.equal((await agentGet(agent, port, `/added-${i - 1}`)).status, 404)
      } else if (i % 4 === 2) {
        await change('PUT', '/config/routes/2/wsgi/workers', i % 8 === 2 ? 2 : 1)
      } else {
        // Another app (a factory) or back: a new pool, the old one drained.
        const app = i % 8 === 3 ? 'apps:create_app()' : 'apps:application'
        await change('PUT', '/config/routes/2/wsgi', wsgi(app, 1))
        const answer = await agentGet(agent, port, '/scaled/')
        assert.equal(answer.status, 200)
        if (app === 'apps:create_app()') assert.equal(answer.body, 'factory')
        else assert.notEqual(answer.body, 'factory')
      }
    }
    loading = false
    await Promise.all(clients)

    t.diagnostic(
      `${sent} requests during ${CHANGES} changes (${[...kinds].map(([k, n]) => `${n}x ${k}`).join(', ')})`,
    )
    assert.deepEqual(failures, [], 'no request to a route that stayed failed')
    assert.ok(sent > CHANGES * 3, `the routes were busy during the changes (${sent} requests)`)
    // The /app pool's settings never changed: the same two workers served it throughout.
    assert.equal(appPids.size, 2, `the /app workers seen: ${[...appPids].join(' ')}`)
    const final = (await curl(control, 'GET', '/config/routes')).json as unknown[]
    assert.equal(final.length, 3)
    assert.deepEqual(final[1], config.routes[1])
  },
)
