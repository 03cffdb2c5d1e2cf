/*
 * WSGI: Gatehouse's wsgi action (its own Python workers over the bridge) against gunicorn
 * (sync workers), uWSGI (--http-socket), and the production stacks nginx + uWSGI (uwsgi_pass)
 * and nginx + gunicorn (proxy_pass to a Unix socket), the same number of worker processes each, on
 * a hello-world WSGI app and a Flask hello route.
 */
import { copyFileSync, mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { gunicornPeer, nginxGunicornPeer, nginxUwsgiPeer, uwsgiHttpPeer } from '../peers/gunicorn.js'
import type { Scenario } from '../scenario.js'

const WORKERS = 2
const PYTHON = '/usr/bin/python3'
const FLASK_APP = new URL('../../../test/fixtures/wsgi/flask_app.py', import.meta.url)
const appDir = (tmpDir: string) => join(tmpDir, 'app')

const HELLO = `def application(environ, start_response):
    start_response('200 OK', [('Content-Type', 'text/plain'), ('Content-Length', '13')])
    return [b'Hello, World!']
`

function prepare(tmpDir: string): void {
  mkdirSync(appDir(tmpDir), { mode: 0o755 })
  writeFileSync(join(appDir(tmpDir), 'hello.py'), HELLO, { mode: 0o644 })
  copyFileSync(FLASK_APP, join(appDir(tmpDir), 'flask_app.py'))
}

const gatehouse =
  (app: string, fronts = 1) =>
  (tmpDir: string) => ({
    config: {
      ...(fronts > 1 ? { front_processes: fronts } : {}),
      routes: [{ path: '/', wsgi: { app, python: PYTHON, chdir: appDir(tmpDir), workers: WORKERS } }],
    },
  })

export const wsgiScenarios: Scenario[] = [
  {
    name: 'wsgi-hello',
    description: `GET /: hello-world WSGI app, ${WORKERS} workers, Gatehouse wsgi vs gunicorn (sync)`,
    path: '/',
    prepare,
    gatehouse: gatehouse('hello:application'),
    peer: gunicornPeer({ appDir, app: 'hello:application', workers: WORKERS }),
  },
  {
    name: 'wsgi-hello-uwsgi',
    description: `GET /: hello-world WSGI app, ${WORKERS} processes, Gatehouse wsgi vs uWSGI --http-socket`,
    path: '/',
    prepare,
    gatehouse: gatehouse('hello:application'),
    peer: uwsgiHttpPeer({ appDir, module: 'hello:application', processes: WORKERS }),
  },
  {
    name: 'wsgi-hello-nginx-uwsgi',
    description: `GET /: hello-world WSGI app, ${WORKERS} processes, Gatehouse wsgi vs nginx + uWSGI (uwsgi_pass)`,
    path: '/',
    prepare,
    gatehouse: gatehouse('hello:application'),
    peer: nginxUwsgiPeer({ appDir, module: 'hello:application', processes: WORKERS }),
  },
  {
    name: 'wsgi-hello-fronts-nginx-uwsgi',
    description: `GET /: hello-world WSGI app, ${WORKERS} processes, Gatehouse wsgi with front_processes = 2 (two front threads) vs nginx (2 workers) + uWSGI`,
    path: '/',
    prepare,
    gatehouse: gatehouse('hello:application', 2),
    peer: nginxUwsgiPeer({ appDir, module: 'hello:application', processes: WORKERS }),
  },
  {
    name: 'wsgi-hello-h2-nginx-uwsgi',
    description: `GET / over HTTP/2 (TLS, h2load -m 10): hello-world WSGI app, ${WORKERS} processes, Gatehouse wsgi vs nginx (ssl http2) + uWSGI (uwsgi_pass)`,
    transport: 'h2',
    path: '/',
    prepare,
    gatehouse: gatehouse('hello:application'),
    peer: nginxUwsgiPeer({ appDir, module: 'hello:application', processes: WORKERS, tls: true }),
  },
  {
    name: 'wsgi-hello-nginx-gunicorn',
    description: `GET /: hello-world WSGI app, ${WORKERS} workers, Gatehouse wsgi vs nginx + gunicorn (sync workers on a Unix socket, keepalive upstream)`,
    path: '/',
    prepare,
    gatehouse: gatehouse('hello:application'),
    peer: nginxGunicornPeer({ appDir, app: 'hello:application', workers: WORKERS }),
  },
  {
    name: 'wsgi-flask',
    description: `GET /: a Flask route, ${WORKERS} workers, Gatehouse wsgi vs gunicorn (sync)`,
    path: '/',
    prepare,
    gatehouse: gatehouse('flask_app:app'),
    peer: gunicornPeer({ appDir, app: 'flask_app:app', workers: WORKERS }),
  },
  {
    name: 'wsgi-flask-uwsgi',
    description: `GET /: a Flask route, ${WORKERS} processes, Gatehouse wsgi vs uWSGI --http-socket`,
    path: '/',
    prepare,
    gatehouse: gatehouse('flask_app:app'),
    peer: uwsgiHttpPeer({ appDir, module: 'flask_app:app', processes: WORKERS }),
  },
]
