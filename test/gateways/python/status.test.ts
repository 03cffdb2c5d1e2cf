/*
 * One status rule (issue 18 item 13): an application's final status must be 200-599,
 * whichever gateway carries it; anything else is 502, as CGI and FastCGI answer it. A
 * status without a registered phrase gets its class's phrase. Gatehouse's own error
 * responses carry their own phrase, never one an app's refused head left behind.
 */
import assert from 'node:assert/strict'
import { join } from 'node:path'
import { test } from 'node:test'
import { FIXTURES, PYTHON, rawRequest, startGatehouse } from '../../support/helpers.js'

const get = (port: number, path: string) =>
  rawRequest(port, `GET ${path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`, { waitMs: 20_000 })
const statusLine = (text: string) => text.slice(0, text.indexOf('\r\n'))

test(
  'WSGI and ASGI: status 999, 0 and 1xx are 502; 299 and 599 pass with a class phrase; a refused head is "500 Internal Server Error"',
  { timeout: 90_000 },
  async (t) => {
    const py = { python: PYTHON, workers: 1 }
    const { port } = await startGatehouse(t, {
      routes: [
        { path: '/wsgi', wsgi: { app: 'apps:status_from_query', chdir: join(FIXTURES, 'wsgi'), ...py } },
        { path: '/', asgi: { app: 'apps:app', chdir: join(FIXTURES, 'asgi'), ...py } },
      ],
    })
    for (const [status, line] of [
      ['999%20Weird', 'HTTP/1.1 502 Bad Gateway'],
      ['100%20Continue', 'HTTP/1.1 502 Bad Gateway'],
      ['299%20Fine', 'HTTP/1.1 299 Fine'],
      ['201%20Created', 'HTTP/1.1 201 Created'],
    ] as const)
      assert.equal(statusLine((await get(port, `/wsgi/?${status}`)).text), line, `WSGI ${status}`)

    for (const [status, line] of [
      ['999', 'HTTP/1.1 502 Bad Gateway'],
      ['0', 'HTTP/1.1 502 Bad Gateway'],
      ['103', 'HTTP/1.1 502 Bad Gateway'],
      ['299', 'HTTP/1.1 299 Success'],
      ['599', 'HTTP/1.1 599 Server Error'],
      ['404', 'HTTP/1.1 404 Not Found'],
    ] as const)
      assert.equal(statusLine((await get(port, `/status?${status}`)).text), line, `ASGI ${status}`)

    assert.equal(statusLine((await get(port, '/bad-header-302')).text), 'HTTP/1.1 500 Internal Server Error')
  },
)
