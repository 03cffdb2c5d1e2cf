/**
 * git's smart HTTP server (`git http-backend`, a real CGI program) behind Gatehouse: clone,
 * fetch and push, including a push large enough that git sends a chunked request body.
 */
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { describe, test } from 'node:test'
import { promisify } from 'node:util'
import { FIXTURES, startGatehouse, tempDir } from '../../support/helpers.js'

const run = promisify(execFile)

interface Setup {
  origin: string
  dir: string
  bare: string
  log: string
  git: (cwd: string, ...args: string[]) => Promise<string>
}

/** A bare repository served at /git (buffered chunked bodies) and /git-stream (streamed). */
async function setup(t: Parameters<typeof tempDir>[0] & { after: (fn: () => Promise<void>) => void }) {
  const dir = tempDir(t, 'gh-git-')
  const home = join(dir, 'home')
  mkdirSync(home)
  const gitEnv = {
    PATH: process.env.PATH ?? '/usr/bin:/bin',
    HOME: home,
    GIT_CONFIG_NOSYSTEM: '1',
    GIT_TERMINAL_PROMPT: '0',
    GIT_AUTHOR_NAME: 'Test',
    GIT_AUTHOR_EMAIL: 'test@example.org',
    GIT_COMMITTER_NAME: 'Test',
    GIT_COMMITTER_EMAIL: 'test@example.org',
  }
  const git = async (cwd: string, ...args: string[]) =>
    (await run('git', args, { cwd, env: gitEnv, maxBuffer: 64 * 1024 * 1024 })).stdout.trim()

  const projects = join(dir, 'projects')
  mkdirSync(projects)
  const bare = join(projects, 'repo.git')
  await git(dir, 'init', '-q', '--bare', '-b', 'main', bare)
  await git(bare, 'config', 'http.receivepack', 'true')

  // A CGI wrapper that records what each request looked like, then becomes git http-backend.
  const log = join(dir, 'requests.log')
  const wrapper = join(FIXTURES, 'git', 'backend.sh')
  const env = { GIT_PROJECT_ROOT: projects, GIT_HTTP_EXPORT_ALL: '1', REQUEST_LOG: log }
  const { origin } = await startGatehouse(t, {
    limits: { max_body_bytes: '64MB' },
    routes: [
      { path: '/git', cgi: { script: wrapper, env } },
      { path: '/git-stream', cgi: { script: wrapper, env, chunked_body: 'stream' } },
    ],
  })
  return { origin, dir, bare, log, git } satisfies Setup
}

describe('git http-backend through Gatehouse', () => {
  test('clone, fetch, push, and a chunked push (buffered: CONTENT_LENGTH set)', async (t) => {
    const { origin, dir, bare, log, git } = await setup(t)

    // Seed the bare repository directly.
    const seed = join(dir, 'seed')
    await git(dir, 'init', '-q', '-b', 'main', seed)
    writeFileSync(join(seed, 'README'), 'first\n')
    await git(seed, 'add', 'README')
    await git(seed, 'commit', '-q', '-m', 'first')
    await git(seed, 'push', '-q', bare, 'main')

    // clone over HTTP
    const clone = join(dir, 'clone')
    await git(dir, 'clone', '-q', `${origin}/git/repo.git`, clone)
    assert.equal(readFileSync(join(clone, 'README'), 'utf8'), 'first\n')

    // fetch a commit that arrived in the meantime
    writeFileSync(join(seed, 'README'), 'second\n')
    await git(seed, 'commit', '-q', '-am', 'second')
    await git(seed, 'push', '-q', bare, 'main')
    await git(clone, 'fetch', '-q', 'origin')
    assert.equal(await git(clone, 'rev-parse', 'origin/main'), await git(seed, 'rev-parse', 'HEAD'))
    await git(clone, 'merge', '-q', '--ff-only', 'origin/main')

    // a small push
    writeFileSync(join(clone, 'small.txt'), 'small\n')
    await git(clone, 'add', 'small.txt')
    await git(clone, 'commit', '-q', '-m', 'small')
    await git(clone, 'push', '-q', 'origin', 'main')
    assert.equal(await git(bare, 'rev-parse', 'main'), await git(clone, 'rev-parse', 'HEAD'))

    // a push of 4 MB of incompressible data with a 64 KiB post buffer: git sends it chunked
    writeFileSync(join(clone, 'random.bin'), randomBytes(4 * 1024 * 1024))
    await git(clone, 'add', 'random.bin')
    await git(clone, 'commit', '-q', '-m', 'big')
    await git(clone, '-c', 'http.postBuffer=65536', 'push', '-q', 'origin', 'main')
    const head = await git(clone, 'rev-parse', 'HEAD')
    assert.equal(await git(bare, 'rev-parse', 'main'), head)
    await git(bare, 'fsck', '--no-progress', '--strict')
    assert.equal(await git(bare, 'cat-file', '-s', 'main:random.bin'), String(4 * 1024 * 1024))

    const requests = readFileSync(log, 'utf8').trim().split('\n')
    const chunkedPushes = requests.filter(
      (l) => l.startsWith('POST /repo.git/git-receive-pack') && l.endsWith('te=chunked'),
    )
    assert.equal(chunkedPushes.length, 1, requests.join('\n'))
    // De-chunked and counted: CONTENT_LENGTH is the pack's size, over 4 MB.
    const cl = Number(/cl=(\d+)/.exec(chunkedPushes[0]!)?.[1])
    assert.ok(cl > 4 * 1024 * 1024, chunkedPushes[0])
  })

  test('a chunked push with chunked_body = "stream" (no CONTENT_LENGTH; git reads to EOF) and a fresh clone', async (t) => {
    const { origin, dir, bare, log, git } = await setup(t)
    const work = join(dir, 'work')
    await git(dir, 'init', '-q', '-b', 'main', work)
    writeFileSync(join(work, 'random.bin'), randomBytes(3 * 1024 * 1024))
    await git(work, 'add', 'random.bin')
    await git(work, 'commit', '-q', '-m', 'big')
    await git(work, 'remote', 'add', 'origin', `${origin}/git-stream/repo.git`)
    await git(work, '-c', 'http.postBuffer=65536', 'push', '-q', 'origin', 'main')
    assert.equal(await git(bare, 'rev-parse', 'main'), await git(work, 'rev-parse', 'HEAD'))

    const requests = readFileSync(log, 'utf8').trim().split('\n')
    assert.ok(
      requests.some((l) => l === 'POST /repo.git/git-receive-pack cl=unset te=chunked'),
      requests.join('\n'),
    )

    const clone = join(dir, 'clone')
    await git(dir, 'clone', '-q', `${origin}/git-stream/repo.git`, clone)
    assert.equal(await git(clone, 'rev-parse', 'HEAD'), await git(work, 'rev-parse', 'HEAD'))
    assert.deepEqual(readFileSync(join(clone, 'random.bin')), readFileSync(join(work, 'random.bin')))
  })
})
