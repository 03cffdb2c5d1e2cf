/*
 * The validated configuration is plain data (issue 13: a config validated in one thread or
 * process is handed to others): structured clone, what postMessage and worker_threads use,
 * gives back an equal object, for a config that uses every gateway's route action and
 * listener, TLS, the control API and the top-level tables.
 */
import assert from 'node:assert/strict'
import { mkdirSync } from 'node:fs'
import { join } from 'node:path'
import { test } from 'node:test'
import { MessageChannel, receiveMessageOnPort } from 'node:worker_threads'
import { validateConfig } from '../../src/index.js'
import { ACTION_NAMES, CATALOG } from '../../src/gateways/index.js'
import { tempDir } from '../support/helpers.js'

test('structuredClone and a MessagePort give back the validated config of every action, equal', (t) => {
  const dir = tempDir(t)
  for (const sub of ['www', 'cgi-bin']) mkdirSync(join(dir, sub))
  const input = {
    listen: [
      '127.0.0.1:0',
      { address: '127.0.0.1:0', tls: { cert: 'cert.pem', key: 'key.pem', hsts: 'max-age=60' } },
    ],
    uwsgi_listen: [`unix:${join(dir, 'uwsgi.sock')}`],
    fastcgi_listen: ['127.0.0.1:0'],
    control: { listen: `unix:${join(dir, 'control.sock')}` },
    encode: true,
    log: { level: 'warn' },
    limits: { header_timeout: '2s', max_body_bytes: '1MB' },
    routes: [
      { path: '/static', static: { root: 'www' } },
      { exact: '/return', return: { status: 200, body: 'x', headers: { 'x-a': 'b' } } },
      { regex: '^/re/(.*)$', return: { status: 301, location: '/{1}' } },
      { path: '/uwsgi', uwsgi: { pass: 'unix:/run/app.sock' } },
      { path: '/cgi', cgi: { root: 'cgi-bin' } },
      { path: '/fastcgi', fastcgi: { pass: '127.0.0.1:9000', document_root: 'www' } },
      { path: '/php', php: { root: 'www' } },
      { exact: '/status', status: {} },
      { exact: '/metrics', metrics: {} },
      { path: '/wsgi', wsgi: { app: 'app:application', workers: 1 } },
      { path: '/asgi', asgi: { app: 'app:app', workers: 1 } },
      { path: '/proxy', proxy: { upstream: 'http://127.0.0.1:1' } },
      { path: '/group', proxy: { upstream: ['127.0.0.1:1', { address: '127.0.0.1:2', weight: 2 }] } },
    ],
  }
  const config = validateConfig(input, dir)
  const used = new Set(config.routes.flatMap((route) => Object.keys(route)))
  assert.deepEqual(
    ACTION_NAMES.filter((name) => !used.has(name)),
    [],
    'the config uses every action',
  )
  const listenerKeys = CATALOG.flatMap((g) => g.keys).filter((k) => k.endsWith('_listen'))
  for (const key of listenerKeys) assert.ok(key in config, `the config has ${key}`)
  assert.deepStrictEqual(structuredClone(config), config)
  const { port1, port2 } = new MessageChannel()
  t.after(() => port1.close())
  port1.postMessage(config)
  assert.deepStrictEqual(receiveMessageOnPort(port2)?.message, config)
})
