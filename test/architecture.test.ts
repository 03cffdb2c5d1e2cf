/*
 * The dependency rules of src/ (docs/architecture.md), checked on the sources themselves:
 * every `import ... from`, `export ... from` and `import(...)` of a relative module, type-only
 * imports included, is an edge; the test fails on any import cycle and on any edge the table
 * below does not allow. Dependency-free: the files are read with fs and scanned with regexes.
 */
import assert from 'node:assert/strict'
import { existsSync, readdirSync, readFileSync } from 'node:fs'
import { dirname, join, relative, sep } from 'node:path'
import { test } from 'node:test'
import { fileURLToPath } from 'node:url'

/** Imports every gateway folder may use (besides its own folder). */
const GATEWAY_DEPS = ['own folder', 'core/', 'http/', 'cgi-vars/', 'inbound/', 'process/']
/** What a codec (bytes in, typed messages out) may import: the error type, and pure core modules. */
const CODEC_DEPS = ['core/errors.ts', 'core/chunked.ts', 'core/http-headers.ts']

/**
 * For each module (a path under src/: `dir/` is a folder and everything in it, `*` one path
 * segment), what it may import. The first rule that matches a module applies; a module no
 * rule matches is an error. `own folder` is the module's gateway folder (`gateways/php/`), or
 * its top folder (`core/`). `*` alone: anything.
 */
const RULES: readonly { module: string; mayImport: readonly string[] }[] = [
  { module: 'gateways/*/codec.ts', mayImport: CODEC_DEPS },
  { module: 'gateways/uwsgi/http-response.ts', mayImport: CODEC_DEPS },
  { module: 'cgi-vars/response.ts', mayImport: CODEC_DEPS },
  // The pure core modules the codecs share stay pure.
  { module: 'core/chunked.ts', mayImport: ['core/errors.ts'] },
  { module: 'core/http-headers.ts', mayImport: ['core/errors.ts'] },
  { module: 'core/', mayImport: ['own folder'] },
  { module: 'http/', mayImport: ['own folder', 'core/'] },
  { module: 'router/', mayImport: ['own folder', 'core/'] },
  { module: 'cgi-vars/', mayImport: ['own folder', 'core/'] },
  // The config schema includes the `acme` table and its checks.
  { module: 'config/', mayImport: ['own folder', 'core/', 'acme/'] },
  // Automatic certificates: acme-client, the certificate storage, the challenge answers.
  { module: 'acme/', mayImport: ['own folder', 'core/'] },
  { module: 'inbound/', mayImport: ['own folder', 'core/', 'http/', 'cgi-vars/'] },
  { module: 'process/', mayImport: ['own folder', 'core/'] },
  // php serves its FastCGI requests with the fastcgi gateway and other files with static.
  { module: 'gateways/php/', mayImport: [...GATEWAY_DEPS, 'gateways/fastcgi/', 'gateways/static/'] },
  { module: 'gateways/index.ts', mayImport: ['gateways/*/index.ts', 'core/'] },
  // Every gateway loaded at once, for the library entry.
  { module: 'gateways/all.ts', mayImport: ['gateways/*/index.ts', 'gateways/index.ts'] },
  { module: 'gateways/*/', mayImport: GATEWAY_DEPS },
  // The server names no gateway: it loops over GATEWAYS (gateways/index.ts).
  {
    module: 'gatehouse.ts',
    mayImport: ['core/', 'http/', 'router/', 'inbound/', 'acme/', 'config.ts', 'gateways/index.ts'],
  },
  // The configuration of this build: config/ applied to GATEWAYS.
  { module: 'config.ts', mayImport: ['core/', 'config/', 'gateways/index.ts'] },
  // The control API: the server's configuration through Gatehouse.reload, and what the
  // status gateway computes (the pools' JSON, the pool metrics) for /status and /metrics.
  {
    module: 'control/',
    mayImport: ['own folder', 'core/', 'config/', 'config.ts', 'gatehouse.ts', 'gateways/status/'],
  },
  // Front threads (front_processes > 1): a Gatehouse per thread, its pools leased from the main thread's.
  {
    module: 'fronts/',
    mayImport: ['own folder', 'core/', 'process/', 'config.ts', 'gatehouse.ts', 'gateways/index.ts'],
  },
  { module: 'index.ts', mayImport: ['*'] },
  { module: 'cli/', mayImport: ['*'] },
]

type Graph = ReadonlyMap<string, readonly string[]>

/** `core/` matches core/types.ts; `gateways/*\/codec.ts` matches gateways/uwsgi/codec.ts. */
function matches(pattern: string, module: string): boolean {
  if (pattern === '*') return true
  const p = pattern.split('/')
  const m = module.split('/')
  const prefix = pattern.endsWith('/')
  if (prefix) p.pop()
  if (prefix ? m.length <= p.length : m.length !== p.length) return false
  return p.every((part, i) => part === '*' || part === m[i])
}

function ownFolder(module: string): string {
  const parts = module.split('/')
  if (parts.length === 1) return module
  return parts[0] === 'gateways' && parts.length > 2 ? `gateways/${parts[1]}/` : `${parts[0]}/`
}

/** Forbidden edges (`from -> to (rule)`) and cycles (`a -> b -> a`) of a module graph. */
export function checkGraph(graph: Graph, rules = RULES): { forbidden: string[]; cycles: string[] } {
  const forbidden: string[] = []
  for (const [from, targets] of graph) {
    const rule = rules.find((r) => matches(r.module, from))
    if (!rule) {
      forbidden.push(`${from}: no rule covers this module`)
      continue
    }
    for (const to of targets) {
      const allowed = rule.mayImport.some((p) =>
        p === 'own folder' ? matches(ownFolder(from), to) || from === to : matches(p, to),
      )
      if (!allowed) forbidden.push(`${from} -> ${to} (rule ${rule.module}: ${rule.mayImport.join(', ')})`)
    }
  }
  return { forbidden, cycles: findCycles(graph) }
}

/** One cycle per strongly connected component (Tarjan), each as a path `a -> b -> a`. */
function findCycles(graph: Graph): string[] {
  let counter = 0
  const index = new Map<string, number>()
  const low = new Map<string, number>()
  const stack: string[] = []
  const onStack = new Set<string>()
  const components: string[][] = []
  const visit = (v: string) => {
    index.set(v, counter)
    low.set(v, counter++)
    stack.push(v)
    onStack.add(v)
    for (const w of graph.get(v) ?? []) {
      if (!index.has(w)) {
        visit(w)
        low.set(v, Math.min(low.get(v)!, low.get(w)!))
      } else if (onStack.has(w)) low.set(v, Math.min(low.get(v)!, index.get(w)!))
    }
    if (low.get(v) === index.get(v)) {
      const component: string[] = []
      let w: string
      do {
        w = stack.pop()!
        onStack.delete(w)
        component.push(w)
      } while (w !== v)
      if (component.length > 1 || (graph.get(v) ?? []).includes(v)) components.push(component)
    }
  }
  for (const v of [...graph.keys()].sort()) if (!index.has(v)) visit(v)
  return components.map((component) => {
    // A shortest way back to the component's first module, through the component.
    const members = new Set(component)
    const start = [...component].sort()[0]!
    const previous = new Map<string, string>()
    const queue = [start]
    while (queue.length > 0) {
      const v = queue.shift()!
      for (const w of graph.get(v) ?? []) {
        if (!members.has(w)) continue
        if (w === start) {
          const path = [start]
          for (let u: string | undefined = v; u !== undefined && u !== start; u = previous.get(u))
            path.splice(1, 0, u)
          return [...path, start].join(' -> ')
        }
        if (!previous.has(w)) {
          previous.set(w, v)
          queue.push(w)
        }
      }
    }
    return component.join(' -> ')
  })
}

const STATIC_IMPORT = /^(?:import|export)\s+(?:type\s+)?(?:[\w\s{},*$]*?\s*from\s*)?['"]([^'"\n]+)['"]/gm
const DYNAMIC_IMPORT = /\bimport\s*\(\s*['"]([^'"\n]+)['"]\s*\)/g

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name)
    if (entry.isDirectory()) return sourceFiles(path)
    return entry.name.endsWith('.ts') && !entry.name.endsWith('.d.ts') ? [path] : []
  })
}

/** The import graph of src/: module (path under src/, with `/`) -> modules it imports. */
function importGraph(srcDir: string): { graph: Map<string, string[]>; unresolved: string[] } {
  const graph = new Map<string, string[]>()
  const unresolved: string[] = []
  const id = (file: string) => relative(srcDir, file).split(sep).join('/')
  for (const file of sourceFiles(srcDir)) {
    const text = readFileSync(file, 'utf8')
    const targets = new Set<string>()
    for (const re of [STATIC_IMPORT, DYNAMIC_IMPORT]) {
      for (const match of text.matchAll(re)) {
        const spec = match[1]!
        if (!spec.startsWith('.')) continue // node: and npm packages
        const target = join(dirname(file), spec.replace(/\.js$/, '.ts'))
        if (!existsSync(target)) unresolved.push(`${id(file)}: ${spec}`)
        else targets.add(id(target))
      }
    }
    graph.set(id(file), [...targets].sort())
  }
  return { graph, unresolved }
}

test('src/ has no import cycle and no import the dependency rules forbid', () => {
  const srcDir = fileURLToPath(new URL('../../src/', import.meta.url))
  const { graph, unresolved } = importGraph(srcDir)
  assert.ok(graph.size > 50, `read the sources in ${srcDir}`)
  assert.ok(graph.get('gatehouse.ts')?.includes('gateways/index.ts'), 'the scanner sees imports')
  assert.deepEqual(unresolved, [], 'relative imports that name no file')
  const { forbidden, cycles } = checkGraph(graph)
  const report = [
    ...(cycles.length > 0 ? ['import cycles:', ...cycles.map((c) => `  ${c}`)] : []),
    ...(forbidden.length > 0 ? ['imports the rules forbid:', ...forbidden.map((f) => `  ${f}`)] : []),
  ]
  assert.deepEqual({ cycles, forbidden }, { cycles: [], forbidden: [] }, report.join('\n'))
})

test('the checker reports a cycle and a forbidden import (it can fail)', () => {
  const graph = new Map<string, string[]>([
    ['core/types.ts', ['core/errors.ts']],
    ['core/errors.ts', ['http/connection.ts']], // core may import nothing outside core
    ['http/connection.ts', ['http/context.ts']],
    ['http/context.ts', ['core/errors.ts', 'http/connection.ts']], // connection <-> context
    ['gateways/uwsgi/codec.ts', ['core/errors.ts', 'gateways/uwsgi/vars.ts']], // a codec imports errors only
    ['gateways/uwsgi/vars.ts', ['gateways/uwsgi/codec.ts', 'cgi-vars/request.ts']],
    ['gateways/php/action.ts', ['gateways/fastcgi/action.ts', 'gateways/static/action.ts']],
    ['gateways/fastcgi/action.ts', ['gateways/python/pool.ts', 'core/types.ts']], // gateway -> gateway
    ['gateways/python/pool.ts', ['process/supervisor.ts']],
    ['gatehouse.ts', ['gateways/index.ts', 'gateways/uwsgi/listen.ts']], // the server names a gateway
    ['stray.ts', []],
  ])
  const { forbidden, cycles } = checkGraph(graph)
  assert.deepEqual(cycles.sort(), [
    'core/errors.ts -> http/connection.ts -> http/context.ts -> core/errors.ts',
    'gateways/uwsgi/codec.ts -> gateways/uwsgi/vars.ts -> gateways/uwsgi/codec.ts',
  ])
  assert.deepEqual(
    forbidden.map((f) => f.replace(/ \(rule .*/, '')),
    [
      'core/errors.ts -> http/connection.ts',
      'gateways/uwsgi/codec.ts -> gateways/uwsgi/vars.ts',
      'gateways/fastcgi/action.ts -> gateways/python/pool.ts',
      'gatehouse.ts -> gateways/uwsgi/listen.ts',
      'stray.ts: no rule covers this module',
    ],
  )
  // Allowed: php -> fastcgi and static, a gateway -> process, vars -> cgi-vars and its own codec.
  assert.ok(!forbidden.some((f) => f.startsWith('gateways/php/') || f.startsWith('gateways/python/')))
})
