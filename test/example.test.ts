/*
 * The bundled demo (`npm start` serves examples/gatehouse.toml): a copy of the examples with
 * OS-chosen ports, run through the CLI, every gateway answering at once — static, return,
 * CGI, PHP on its own php-cgi pool, WSGI, ASGI with a WebSocket, the status page, and the
 * FastCGI and uwsgi listeners (reached with Debian's cgi-fcgi and the uwsgi client).
 */
import assert from 'node:assert/strict'
import { type ChildProcess, spawn, spawnSync } from 'node:child_process'
import { cpSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { test } from 'node:test'
import { request } from 'undici'
import WebSocket from 'ws'
import { uwsgiRequest } from '../src/gateways/uwsgi/client.js'
import { CLI, REPO_ROOT, tempDir, stopServe } from './support/helpers.js'

async function text(url: string): Promise<[number, string]> {
  const r = await request(url)
  return [r.statusCode, await r.body.text()]
}

test('the bundled demo serves every gateway at once', async (t) => {
  const dir = tempDir(t, 'gh-example-')
  cpSync(join(REPO_ROOT, 'examples'), dir, { recursive: true })
  const config = join(dir, 'gatehouse.toml')
  const original = readFileSync(config, 'utf8')
  const rewritten = original
    .replace('listen = ["127.0.0.1:8080"]', 'listen = ["127.0.0.1:0"]')
    .replace('uwsgi_listen = ["127.0.0.1:9000"]', 'uwsgi_listen = ["127.0.0.1:0"]')
    .replace('fastcgi_listen = ["127.0.0.1:9001"]', 'fastcgi_listen = ["127.0.0.1:0"]')
    .replace('access_log = "stdout"', 'access_log = "off"')
  assert.notEqual(rewritten, original)
  writeFileSync(config, rewritten)

  const child: ChildProcess = spawn(process.execPath, [CLI, 'serve', '--config', config], {
    stdio: ['ignore', 'ignore', 'pipe'],
  })
  t.after(() => stopServe(child))
  let log = ''
  const addresses = await new Promise<{ http: string; uwsgi: string; fastcgi: string }>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`not listening:\n${log}`)), 60_000)
    child.stderr!.setEncoding('utf8')
    child.stderr!.on('data', (d: string) => {
      log += d
      const http = /"listen":"([^"]+)","msg":"listening"/.exec(log)?.[1]
      const uwsgi = /"uwsgi_listen":"([^"]+)"/.exec(log)?.[1]
      const fastcgi = /"fastcgi_listen":"([^"]+)"/.exec(log)?.[1]
      if (http && uwsgi && fastcgi) {
        clearTimeout(timer)
        resolve({ http, uwsgi, fastcgi })
      }
    })
    child.once('exit', (code) => reject(new Error(`exited ${code}:\n${log}`)))
  })
  const origin = `http://${addresses.http}`

  assert.deepEqual(await text(`${origin}/healthz`), [200, 'ok\n'])
  const [indexStatus, index] = await text(`${origin}/`)
  assert.equal(indexStatus, 200)
  assert.match(index, /<html/i)
  const [cgiStatus, cgi] = await text(`${origin}/cgi-bin/hello.py/some/path?name=demo`)
  assert.equal(cgiStatus, 200)
  assert.match(cgi, /PATH_INFO<\/th><td>\/some\/path/)
  const [phpStatus, php] = await text(`${origin}/php/index.php/extra?x=1`)
  assert.equal(phpStatus, 200)
  assert.match(php, /Hello from PHP 8\.\d+.*\nREQUEST_URI: \/php\/index\.php\/extra\?x=1\nPATH_INFO: \/extra/)
  const [wsgiStatus, wsgi] = await text(`${origin}/wsgi/a/b?q=1`)
  assert.equal(wsgiStatus, 200)
  assert.match(wsgi, /SCRIPT_NAME: '\/wsgi'\nPATH_INFO: '\/a\/b'\nQUERY_STRING: 'q=1'/)
  const [asgiStatus, asgi] = await text(`${origin}/asgi/x`)
  assert.equal(asgiStatus, 200)
  assert.match(asgi, /lifespan state \{'started_by': \d+\}/)
  const [statusCode, status] = await text(`${origin}/status?json`)
  assert.equal(statusCode, 200)
  assert.equal(JSON.parse(status).pool, 'php')
  const [poolsCode, pools] = await text(`${origin}/pools`)
  assert.equal(poolsCode, 200)
  assert.match(pools, /"php"[\s\S]*"wsgi"|"wsgi"[\s\S]*"php"/)

  // The ASGI WebSocket echo.
  const ws = new WebSocket(`ws://${addresses.http}/asgi/ws`)
  const echoed = await new Promise<string>((resolve, reject) => {
    ws.once('open', () => ws.send('ping from the demo test'))
    ws.once('message', (data: Buffer) => resolve(data.toString()))
    ws.once('error', reject)
  })
  ws.close()
  assert.equal(echoed, 'ping from the demo test')

  // The uwsgi listener reaches the same routes.
  const viaUwsgi = await uwsgiRequest(addresses.uwsgi, { path: '/healthz' })
  assert.equal(viaUwsgi.status, 200)
  viaUwsgi.body.resume()

  // So does the FastCGI listener, with Debian's cgi-fcgi as the client.
  const cgiFcgi = spawnSync('cgi-fcgi', ['-bind', '-connect', addresses.fastcgi], {
    env: {
      REQUEST_METHOD: 'GET',
      REQUEST_URI: '/healthz',
      SCRIPT_NAME: '/healthz',
      SERVER_PROTOCOL: 'HTTP/1.1',
    },
    encoding: 'utf8',
    timeout: 20_000,
  })
  assert.equal(cgiFcgi.status, 0, cgiFcgi.stderr)
  assert.match(cgiFcgi.stdout, /^Status: 200/m)
  assert.match(cgiFcgi.stdout, /\r\n\r\nok\n$/)

  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)))
  child.kill('SIGTERM')
  assert.equal(await exited, 0)
})
