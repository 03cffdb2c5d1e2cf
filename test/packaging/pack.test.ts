/*
 * The npm package as a user gets it (issue 17 item 12): `npm pack` from a clean copy of the
 * source (no dist/: prepack must build), the tarball installed into an empty project, then its
 * CLI (`npx gatehouse --version`, `gatehouse serve --wsgi` against a tiny WSGI app, which needs
 * the shipped python/ package) and its library API from a TypeScript consumer compiled with
 * skipLibCheck false (the shipped .d.ts must resolve every type they name).
 *
 * The pack runs in a copy, not in the repo: prepack rebuilds dist/, which the other tests run
 * from. Installing the tarball fetches its dependencies like any user's install, from npm's
 * cache when it has them (--prefer-offline) and the registry otherwise.
 */
import assert from 'node:assert/strict'
import { type ChildProcess, execFile, spawn } from 'node:child_process'
import {
  cpSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  realpathSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs'
import { get } from 'node:http'
import { dirname, join, relative } from 'node:path'
import { test } from 'node:test'
import { listeningAddress, PYTHON, REPO_ROOT, stopServe, tempDir } from '../support/helpers.js'

const pkg = JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')) as {
  name: string
  version: string
  devDependencies: Record<string, string>
}

/** Not part of a clean clone: build output, installed modules, local scratch. */
const NOT_IN_A_CLONE = new Set([
  'dist',
  'node_modules',
  '.git',
  '.tmp',
  'scratch',
  'bench/results',
  '__pycache__',
])

/** The environment without what npm sets for the script running this test (npm_config_*, ...). */
function cleanEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {}
  for (const [k, v] of Object.entries(process.env)) if (!/^npm_|^INIT_CWD$/i.test(k)) env[k] = v
  // The bin's `#!/usr/bin/env node` finds this node first.
  env.PATH = `${dirname(process.execPath)}:${process.env.PATH ?? ''}`
  return env
}

function run(cmd: string, args: string[], cwd: string, timeout = 240_000): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { cwd, env: cleanEnv(), timeout, maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${cmd} ${args.join(' ')} (in ${cwd}): ${err.message}\n${stdout}\n${stderr}`))
      else resolve(stdout)
    })
  })
}

function httpGet(url: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    get(url, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (c: string) => (body += c))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }))
    }).on('error', reject)
  })
}

test(
  'npm pack: the tarball installs, its CLI serves a WSGI app and its .d.ts compile',
  { timeout: 600_000 },
  async (t) => {
    const root = tempDir(t, 'gh-pack-')

    // A clean clone: the sources without dist/, sharing the repo's node_modules (tsc for prepack).
    const clone = join(root, 'clone')
    cpSync(REPO_ROOT, clone, {
      recursive: true,
      filter: (src) => {
        const rel = relative(REPO_ROOT, src)
        return !NOT_IN_A_CLONE.has(rel) && !rel.split('/').includes('__pycache__')
      },
    })
    symlinkSync(realpathSync(join(REPO_ROOT, 'node_modules')), join(clone, 'node_modules'), 'dir')

    // Pack (prepack builds).
    const packs = join(root, 'packs')
    mkdirSync(packs)
    const packed = JSON.parse(await run('npm', ['pack', '--json', '--pack-destination', packs], clone)) as {
      filename: string
      files: { path: string }[]
    }[]
    const files = packed[0]!.files.map((f) => f.path)
    for (const f of [
      'package.json',
      'README.md',
      'LICENSE',
      'dist/src/index.js',
      'dist/src/index.d.ts',
      'dist/src/cli/main.js',
      'python/gatehouse_worker/__main__.py',
      'python/gatehouse_spawn/forkserver.py',
      'docs/wsgi.md',
    ])
      assert.ok(files.includes(f), `${f} missing from the tarball: ${files.join(' ')}`)
    const unwanted = files.filter((f) =>
      /^(test|bench|dist\/test|dist\/bench)\/|fixtures|__pycache__|\.pyc$/.test(f),
    )
    assert.deepEqual(unwanted, [], 'tests, bench, fixtures or Python caches in the tarball')
    const tarball = join(packs, packed[0]!.filename)
    assert.ok(existsSync(tarball), `${tarball}: ${readdirSync(packs).join(' ')}`)

    // Install it into an empty project, with @types/node as a TypeScript user of Node has it
    // (the repo's range); nothing else, so the .d.ts must find the rest in the dependencies.
    const app = join(root, 'consumer')
    mkdirSync(app)
    writeFileSync(
      join(app, 'package.json'),
      JSON.stringify({ name: 'consumer', private: true, type: 'module' }),
    )
    await run(
      'npm',
      [
        'install',
        tarball,
        `@types/node@${pkg.devDependencies['@types/node']}`,
        '--prefer-offline',
        '--no-audit',
        '--no-fund',
        '--loglevel=error',
      ],
      app,
    )
    const installed = join(app, 'node_modules', pkg.name)
    assert.ok(existsSync(join(installed, 'dist/src/index.d.ts')))

    // The CLI: `npx gatehouse` (--no: never fetch a package of that name from the registry).
    const version = await run('npx', ['--no', '--', 'gatehouse', '--version'], app, 60_000)
    assert.equal(version.trim(), pkg.version)

    // `gatehouse serve --wsgi` from the installed package: its workers run the shipped python/.
    writeFileSync(
      join(app, 'app.py'),
      [
        'def app(environ, start_response):',
        "    start_response('200 OK', [('Content-Type', 'text/plain')])",
        "    return [b'hello from ' + environ['PATH_INFO'].encode()]",
        '',
      ].join('\n'),
    )
    const bin = join(app, 'node_modules', '.bin', 'gatehouse')
    const child: ChildProcess = spawn(
      bin,
      ['serve', '--listen', '127.0.0.1:0', '--wsgi', 'app:app', '--python', PYTHON],
      { cwd: app, env: cleanEnv(), stdio: ['ignore', 'pipe', 'pipe'] },
    )
    t.after(() => stopServe(child))
    const { address, stderr } = await listeningAddress(child)
    const res = await httpGet(`http://${address}/packed`)
    assert.equal(res.status, 200, stderr())
    assert.equal(res.body, 'hello from /packed')
    await stopServe(child)

    // The library API from TypeScript, strict and with skipLibCheck false, then run.
    writeFileSync(
      join(app, 'main.ts'),
      [
        "import { createGatehouse, type GatehouseConfigInput, isGatehouseError, wsgi } from 'gatehouse'",
        '',
        "const config: GatehouseConfigInput = { listen: ['127.0.0.1:0'], log: { level: 'silent' }, routes: [] }",
        'const gatehouse = createGatehouse(config)',
        'const [first] = await gatehouse.listen()',
        "if (typeof wsgi !== 'function' || isGatehouseError(new Error('x'))) throw new Error('bad exports')",
        'console.log(`listening ${(first?.port ?? 0) > 0}`)',
        'await gatehouse.close(0)',
        '',
      ].join('\n'),
    )
    writeFileSync(
      join(app, 'tsconfig.json'),
      JSON.stringify({
        compilerOptions: {
          target: 'ES2022',
          module: 'NodeNext',
          moduleResolution: 'NodeNext',
          strict: true,
          skipLibCheck: false,
          types: ['node'],
          outDir: 'out',
        },
        files: ['main.ts'],
      }),
    )
    await run(
      process.execPath,
      [join(REPO_ROOT, 'node_modules/typescript/bin/tsc'), '-p', 'tsconfig.json'],
      app,
      120_000,
    )
    const out = await run(process.execPath, [join(app, 'out', 'main.js')], app, 30_000)
    assert.equal(out.trim(), 'listening true')
  },
)
