/*
 * ASGI: Gatehouse's asgi action (its own Python workers on asyncio/uvloop over the bridge)
 * against uvicorn (uvloop + httptools), nginx + uvicorn (the production stack: uvicorn on a
 * Unix socket behind nginx proxy_pass), hypercorn (uvloop worker) and daphne, on a
 * hello-world ASGI app and a Starlette JSON route. The same number of worker processes
 * each (daphne: one process, it has no workers option).
 */
import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { daphnePeer, hypercornPeer, nginxUvicornPeer, uvicornPeer } from '../peers/uvicorn.js'
import type { Scenario } from '../scenario.js'

const WORKERS = 2
const PYTHON = '/usr/bin/python3'
const appDir = (tmpDir: string) => join(tmpDir, 'app')

const HELLO = `async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", b"13")]})
    await send({"type": "http.response.body", "body": b"Hello, World!"})
`

const STARLETTE = `from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route


async def hello(request):
    return JSONResponse({"message": "Hello, World!", "path": request.url.path})


app = Starlette(routes=[Route("/", hello)])
`

function prepare(tmpDir: string): void {
  mkdirSync(appDir(tmpDir), { mode: 0o755 })
  writeFileSync(join(appDir(tmpDir), 'hello.py'), HELLO, { mode: 0o644 })
  writeFileSync(join(appDir(tmpDir), 'starlette_app.py'), STARLETTE, { mode: 0o644 })
}

const gatehouse = (app: string) => (tmpDir: string) => ({
  config: { routes: [{ path: '/', asgi: { app, python: PYTHON, chdir: appDir(tmpDir), workers: WORKERS } }] },
})

export const asgiScenarios: Scenario[] = [
  {
    name: 'asgi-hello',
    description: `GET /: hello-world ASGI app, ${WORKERS} workers, Gatehouse asgi vs uvicorn (uvloop, httptools)`,
    path: '/',
    prepare,
    gatehouse: gatehouse('hello:app'),
    peer: uvicornPeer({ appDir, app: 'hello:app', workers: WORKERS }),
  },
  {
    name: 'asgi-hello-nginx-uvicorn',
    description: `GET /: hello-world ASGI app, ${WORKERS} workers, Gatehouse asgi vs nginx + uvicorn (Unix socket, keepalive upstream)`,
    path: '/',
    prepare,
    gatehouse: gatehouse('hello:app'),
    peer: nginxUvicornPeer({ appDir, app: 'hello:app', workers: WORKERS }),
  },
  {
    name: 'asgi-hello-hypercorn',
    description: `GET /: hello-world ASGI app, ${WORKERS} workers, Gatehouse asgi vs hypercorn (uvloop worker)`,
    path: '/',
    prepare,
    gatehouse: gatehouse('hello:app'),
    peer: hypercornPeer({ appDir, app: 'hello:app', workers: WORKERS }),
  },
  {
    name: 'asgi-hello-daphne',
    description: `GET /: hello-world ASGI app, Gatehouse asgi (${WORKERS} workers) vs daphne (one process)`,
    path: '/',
    prepare,
    gatehouse: gatehouse('hello:app'),
    peer: daphnePeer({ appDir, app: 'hello:app' }),
  },
  {
    name: 'asgi-starlette',
    description: `GET /: a Starlette JSON route, ${WORKERS} workers, Gatehouse asgi vs uvicorn (uvloop, httptools)`,
    path: '/',
    prepare,
    gatehouse: gatehouse('starlette_app:app'),
    peer: uvicornPeer({ appDir, app: 'starlette_app:app', workers: WORKERS }),
  },
  {
    name: 'asgi-starlette-hypercorn',
    description: `GET /: a Starlette JSON route, ${WORKERS} workers, Gatehouse asgi vs hypercorn (uvloop worker)`,
    path: '/',
    prepare,
    gatehouse: gatehouse('starlette_app:app'),
    peer: hypercornPeer({ appDir, app: 'starlette_app:app', workers: WORKERS }),
  },
]
