import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { test } from 'node:test'
import { CLI, FIXTURES, PYTHON, tempDir } from '../../support/helpers.js'

/** `gatehouse serve ARGS` with an app that cannot start: its exit code and stderr lines. */
async function serveFailing(args: string[], cwd: string): Promise<{ code: number | null; lines: string[] }> {
  const child = spawn(
    process.execPath,
    [CLI, 'serve', '--listen', '127.0.0.1:0', '--python', PYTHON, '--workers', '3', ...args],
    { cwd, stdio: ['ignore', 'pipe', 'pipe'] },
  )
  let stderr = ''
  child.stderr.setEncoding('utf8')
  child.stderr.on('data', (d: string) => (stderr += d))
  const timer = setTimeout(() => child.kill('SIGKILL'), 30_000)
  const code = await new Promise<number | null>((resolve) => child.on('exit', resolve))
  clearTimeout(timer)
  return { code, lines: stderr.split('\n').filter((l) => l.length > 0) }
}

/** One start attempt of 3 workers (5 die before the crash-loop guard): one traceback, the cause named last. */
function assertOneTraceback(lines: string[], cause: RegExp): void {
  const tracebacks = lines.filter((l) => l.includes('Traceback (most recent call last)'))
  assert.equal(tracebacks.length, 1, lines.join('\n'))
  assert.match(tracebacks[0]!, cause)
  assert.ok(lines.length < 20, `${lines.length} lines:\n${lines.join('\n')}`)
  assert.ok(
    lines.some((l) => l.includes('same traceback as worker')),
    lines.join('\n'),
  )
  assert.match(lines.at(-1)!, /^gatehouse: worker pool cannot start its workers/)
  assert.match(lines.at(-1)!, cause)
}

test('an app that does not import: the traceback once, the last line names the module and the cause', async (t) => {
  const dir = tempDir(t, 'gh-startfail-')
  const { code, lines } = await serveFailing(['--wsgi', 'nosuchmodule:app'], dir)
  assert.equal(code, 1)
  assertOneTraceback(lines, /nosuchmodule:app: ModuleNotFoundError: No module named 'nosuchmodule'/)
})

test('an app with a syntax error: the traceback once, the last line names the file and the error', async (t) => {
  const dir = tempDir(t, 'gh-startfail-')
  writeFileSync(join(dir, 'broken_syntax.py'), 'def app(environ, start_response:\n    return []\n')
  const { code, lines } = await serveFailing(['--wsgi', 'broken_syntax:app', '--chdir', dir], dir)
  assert.equal(code, 1)
  assertOneTraceback(lines, /broken_syntax:app: SyntaxError: .*broken_syntax\.py, line 1/)
})

test('ASGI lifespan startup failure with a traceback (Starlette): once, the cause named last', async (t) => {
  const dir = tempDir(t, 'gh-startfail-')
  writeFileSync(
    join(dir, 'failing_lifespan.py'),
    [
      'import traceback',
      '',
      'async def app(scope, receive, send):',
      '    await receive()',
      '    try:',
      '        raise RuntimeError("the database is not there")',
      '    except RuntimeError:',
      '        await send({"type": "lifespan.startup.failed", "message": traceback.format_exc()})',
      '        raise',
      '',
    ].join('\n'),
  )
  const { code, lines } = await serveFailing(['--asgi', 'failing_lifespan:app', '--chdir', dir], dir)
  assert.equal(code, 1)
  assertOneTraceback(lines, /ASGI lifespan startup failed: RuntimeError: the database is not there/)
})

test('ASGI lifespan.startup.failed without a traceback: the message once, then one short line per worker', async (t) => {
  const dir = tempDir(t, 'gh-startfail-')
  const { code, lines } = await serveFailing(
    ['--asgi', 'apps:app', '--chdir', join(FIXTURES, 'asgi'), '--env', 'LIFESPAN_FAIL=1'],
    dir,
  )
  assert.equal(code, 1)
  const reports = lines.filter((l) => l.includes('lifespan startup failed: the database is not there'))
  // The first worker's report and the crash-loop error (its log entry and the CLI's last line).
  assert.equal(reports.length, 3, lines.join('\n'))
  assert.ok(
    lines.some((l) => l.includes('same start failure as worker')),
    lines.join('\n'),
  )
  assert.match(lines.at(-1)!, /lifespan startup failed: the database is not there/)
})
