/*
 * The `php` action (PHP front controller) in front of a real php-fpm: what a PHP
 * application sees, uploads and downloads, redirects and cookies, the error log, and the
 * security rules (CVE-2019-11043 shapes, never executing or showing what is not a script).
 */
import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import {
  accessSync,
  constants,
  mkdirSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs'
import { createServer, type IncomingMessage, request as httpRequest } from 'node:http'
import { join } from 'node:path'
import { Readable } from 'node:stream'
import { after, before, describe, test } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { request } from 'undici'
import type { GatehouseConfigInput } from '../../../src/config.js'
import { createGatehouse, type Gatehouse } from '../../../src/gatehouse.js'
import { php, splitPhpPath } from '../../../src/gateways/php/action.js'
import { eventually, rawRequest } from '../../support/helpers.js'
import { type PhpFpm, phpFpmUnavailable, startPhpFpm } from '../../support/php-fpm.js'

type PhpInput = NonNullable<NonNullable<GatehouseConfigInput['routes']>[number]['php']>

const DUMP = `<?php
header('Content-Type: application/json');
$keys = ['SCRIPT_NAME', 'SCRIPT_FILENAME', 'PATH_INFO', 'PATH_TRANSLATED', 'DOCUMENT_ROOT', 'REQUEST_URI',
  'QUERY_STRING', 'REQUEST_METHOD', 'REDIRECT_STATUS', 'GATEWAY_INTERFACE', 'SERVER_SOFTWARE', 'SERVER_NAME',
  'SERVER_PORT', 'SERVER_PROTOCOL', 'REMOTE_ADDR', 'CONTENT_LENGTH', 'CONTENT_TYPE', 'HTTP_PHP_VALUE',
  'PHP_VALUE', 'PHP_ADMIN_VALUE', 'HTTP_PHP_ADMIN_VALUE', 'HTTP_AUTHORIZATION', 'HTTP_X_TEST', 'PHP_SELF'];
$out = [];
foreach ($keys as $k) { if (array_key_exists($k, $_SERVER)) $out[$k] = $_SERVER[$k]; }
$out['get'] = $_GET;
$out['ini'] = ['auto_prepend_file' => ini_get('auto_prepend_file'), 'session.auto_start' => ini_get('session.auto_start')];
echo json_encode($out);
`

const SCRIPTS: Record<string, string> = {
  'index.php': DUMP,
  'info.php': DUMP,
  'sub/index.php': DUMP,
  'uploads/x.jpg': '<?php echo "EXECUTED"; ?>\nnot really a jpeg\n',
  'hello.txt': 'hello static\n',
  'docs/index.html': '<h1>docs</h1>\n',
  'secret.PHP': '<?php $password = "hunter2";',
  'source.phps': '<?php $password = "hunter2";',
  // Editor and tool leftovers of a script hold its source too.
  'config.php~': '<?php $password = "hunter2";',
  'config.php.bak': '<?php $password = "hunter2";',
  'config.php.orig': '<?php $password = "hunter2";',
  'config.php.save': '<?php $password = "hunter2";',
  'config.php.swp': '<?php $password = "hunter2";',
  'config.php.1': '<?php $password = "hunter2";',
  '#config.php#': '<?php $password = "hunter2";',
  '.env': 'SECRET=1\n',
  'form.php': `<?php header('Content-Type: application/json'); echo json_encode(['post' => $_POST, 'get' => $_GET]);`,
  'input.php': `<?php $in = file_get_contents('php://input');
    header('Content-Type: application/json');
    echo json_encode(['length' => strlen($in), 'md5' => md5($in), 'cl' => $_SERVER['CONTENT_LENGTH'] ?? null]);`,
  'upload.php': `<?php header('Content-Type: application/json'); $f = $_FILES['file'] ?? null;
    echo json_encode(['error' => $f['error'] ?? -1, 'size' => $f['size'] ?? 0, 'name' => $f['name'] ?? null,
      'md5' => $f && $f['error'] === 0 ? md5_file($f['tmp_name']) : null, 'note' => $_POST['note'] ?? null]);`,
  'cookies.php': `<?php setcookie('a', '1'); setcookie('b', '2', ['path' => '/x']); header('Set-Cookie: c=3', false); echo "cookies";`,
  'redirect.php': `<?php header('Location: /target?x=1');`,
  'local.php': `<?php header('Location: /local-target', true, 200);`,
  'warn.php': `<?php trigger_error('something odd', E_USER_WARNING); error_log('custom line from php'); echo "done";`,
  'sleep.php': `<?php usleep(300000); echo "slept";`,
  'big.php': `<?php
    $total = (int) ($_GET['mb'] ?? 100) * 1024 * 1024; $chunk = str_repeat('0123456789abcdef', 4096);
    header('Content-Type: application/octet-stream'); header('Content-Length: ' . $total);
    $progress = dirname(__DIR__) . '/progress' . preg_replace('/[^0-9]/', '', $_GET['id'] ?? '') . '.txt';
    for ($sent = 0; $sent < $total; ) { echo $chunk; flush(); $sent += strlen($chunk); file_put_contents("$progress.tmp", (string) $sent); rename("$progress.tmp", $progress); }`,
}

interface Dump {
  [key: string]: unknown
  get: Record<string, string>
  ini: Record<string, string | false>
}

/**
 * The same suite against php-fpm (an address) and against Gatehouse's own php-cgi pool (no
 * address: the php action runs php-cgi workers with the same php.ini settings).
 */
type Backend = 'php-fpm' | 'php-cgi pool'

const PHP_CGI = '/usr/bin/php-cgi'
function phpCgiUnavailable(): string | undefined {
  try {
    accessSync(PHP_CGI, constants.X_OK)
    return undefined
  } catch {
    return `${PHP_CGI} not found (Debian package php-cgi)`
  }
}

const frontControllerSuite = (backend: Backend) => () => {
  let fpm: PhpFpm
  let root: string
  const servers: Gatehouse[] = []

  async function serve(php: Partial<PhpInput> = {}, extra: Partial<GatehouseConfigInput> = {}) {
    const gatehouse = createGatehouse({
      listen: ['127.0.0.1:0'],
      log: { level: 'silent' },
      ...extra,
      routes: [{ path: '/', max_body_bytes: '16MB', php: { root, ...upstream(), ...php } }],
    })
    servers.push(gatehouse)
    const [first] = await gatehouse.listen()
    return `http://127.0.0.1:${first!.port}`
  }
  /** php-fpm's address, or a php-cgi pool with the settings the php-fpm pool has. */
  const upstream = (): Partial<PhpInput> =>
    backend === 'php-fpm'
      ? { fastcgi: fpm.address }
      : {
          workers: { pm: 'static', max_children: 3 },
          ini: {
            upload_max_filesize: '32M',
            post_max_size: '32M',
            output_buffering: 4096,
            display_errors: 'off',
            log_errors: 'on',
            error_reporting: 'E_ALL',
            upload_tmp_dir: fpm.dir,
          },
        }
  const upstreamName = () => (backend === 'php-fpm' ? fpm.address : 'pool:php')
  let origin: string

  before(async () => {
    fpm = await startPhpFpm({
      maxChildren: 3,
      pool: [
        'php_admin_value[upload_max_filesize] = 32M',
        'php_admin_value[post_max_size] = 32M',
        'php_admin_value[output_buffering] = 4096',
      ],
    })
    root = join(fpm.dir, 'public')
    for (const [name, body] of Object.entries(SCRIPTS)) {
      mkdirSync(join(root, name, '..'), { recursive: true })
      writeFileSync(join(root, name), body)
    }
    writeFileSync(join(fpm.dir, 'outside.php'), '<?php echo "OUTSIDE";')
    symlinkSync(join(fpm.dir, 'outside.php'), join(root, 'escape.php'))
    origin = await serve()
  })
  after(async () => {
    await Promise.all(servers.map((g) => g.close(0)))
    await fpm.stop()
  })

  const get = async (path: string, headers: Record<string, string> = {}) => {
    const res = await request(origin + path, { headers })
    return { status: res.statusCode, headers: res.headers, text: await res.body.text() }
  }
  const dump = async (path: string, headers: Record<string, string> = {}) => {
    const res = await get(path, headers)
    assert.equal(res.status, 200, `${path}: ${res.text}`)
    return JSON.parse(res.text) as Dump
  }

  test('an unknown path runs the front controller with the original REQUEST_URI and query', async () => {
    const d = await dump('/blog/2024/hello-world?page=2&q=a%20b')
    assert.equal(d.SCRIPT_NAME, '/index.php')
    assert.equal(d.SCRIPT_FILENAME, join(root, 'index.php'))
    assert.equal(d.REQUEST_URI, '/blog/2024/hello-world?page=2&q=a%20b')
    assert.equal(d.QUERY_STRING, 'page=2&q=a%20b')
    assert.deepEqual(d.get, { page: '2', q: 'a b' })
    assert.equal(d.PATH_INFO, undefined)
    assert.equal(d.DOCUMENT_ROOT, root)
    assert.equal(d.REDIRECT_STATUS, '200')
    assert.equal(d.GATEWAY_INTERFACE, 'CGI/1.1')
    assert.match(String(d.SERVER_SOFTWARE), /^Gatehouse\//)
    assert.equal(d.REQUEST_METHOD, 'GET')
    assert.equal(d.REMOTE_ADDR, '127.0.0.1')
  })

  test('a .php path runs that script; the rest after it is PATH_INFO (decoded) and PATH_TRANSLATED', async () => {
    const d = await dump('/info.php/a/b%20c?x=1')
    assert.equal(d.SCRIPT_NAME, '/info.php')
    assert.equal(d.SCRIPT_FILENAME, join(root, 'info.php'))
    assert.equal(d.PATH_INFO, '/a/b c')
    assert.equal(d.PATH_TRANSLATED, `${root}/a/b c`)
    assert.equal(d.PHP_SELF, '/info.php/a/b c')
    assert.equal(d.REQUEST_URI, '/info.php/a/b%20c?x=1')
  })

  test('existing files are served by the static handler, not PHP', async () => {
    const res = await get('/hello.txt')
    assert.equal(res.status, 200)
    assert.equal(res.text, 'hello static\n')
    assert.ok(res.headers.etag)
    assert.match(String(res.headers['content-type']), /^text\/plain/)
  })

  test('a directory with an index.php: redirect to the slash form, then run it', async () => {
    const res = await request(`${origin}/sub?k=v`)
    await res.body.dump()
    assert.equal(res.statusCode, 301)
    assert.equal(res.headers.location, '/sub/?k=v')
    const d = await dump('/sub/')
    assert.equal(d.SCRIPT_NAME, '/sub/index.php')
    const docs = await get('/docs/')
    assert.equal(docs.text, '<h1>docs</h1>\n')
  })

  test('HEAD gets the head of a PHP response and no body', async () => {
    const res = await request(`${origin}/form.php`, { method: 'HEAD' })
    assert.equal(res.statusCode, 200)
    assert.match(String(res.headers['content-type']), /application\/json/)
    assert.equal(await res.body.text(), '')
  })

  test('a POSTed form reaches $_POST, the query $_GET', async () => {
    const res = await request(`${origin}/form.php?from=query`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: 'name=Ada+Lovelace&lang=en',
    })
    assert.deepEqual(await res.body.json(), {
      post: { name: 'Ada Lovelace', lang: 'en' },
      get: { from: 'query' },
    })
  })

  test('a 10 MB multipart upload arrives whole', async () => {
    const file = Buffer.alloc(10 * 1024 * 1024)
    for (let i = 0; i < file.length; i += 4) file.writeUInt32BE(i, i)
    const boundary = '----gatehouse-boundary-7MA4YWxkTrZu0gW'
    const body = Buffer.concat([
      Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="note"\r\n\r\nhello upload\r\n`),
      Buffer.from(
        `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="data.bin"\r\nContent-Type: application/octet-stream\r\n\r\n`,
      ),
      file,
      Buffer.from(`\r\n--${boundary}--\r\n`),
    ])
    const res = await request(`${origin}/upload.php`, {
      method: 'POST',
      headers: { 'content-type': `multipart/form-data; boundary=${boundary}` },
      body,
    })
    assert.deepEqual(await res.body.json(), {
      error: 0,
      size: file.length,
      name: 'data.bin',
      md5: createHash('md5').update(file).digest('hex'),
      note: 'hello upload',
    })
  })

  test('a chunked body is read whole first so PHP gets CONTENT_LENGTH (in memory and via a temp file)', async () => {
    for (const size of [1000, 300_000]) {
      const data = Buffer.alloc(size, 'q')
      const res = await request(`${origin}/input.php`, {
        method: 'POST',
        headers: { 'content-type': 'application/octet-stream' },
        // A stream body: undici sends it chunked.
        body: Readable.from([data.subarray(0, size / 2), data.subarray(size / 2)]),
      })
      assert.deepEqual(await res.body.json(), {
        length: size,
        md5: createHash('md5').update(data).digest('hex'),
        cl: String(size),
      })
    }
  })

  test('a chunked body over the route limit is a 413 and the connection closes', async () => {
    const chunk = Buffer.alloc(64 * 1024, 'z').toString()
    const res = await rawRequest(Number(new URL(origin).port), [
      'POST /input.php HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n',
      ...Array.from({ length: 300 }, () => `${chunk.length.toString(16)}\r\n${chunk}\r\n`),
      '0\r\n\r\n',
    ])
    assert.equal(res.status, 413)
    assert.ok(res.closedByServer)
  })

  test('several Set-Cookie fields all reach the client', async () => {
    const res = await request(`${origin}/cookies.php`)
    assert.equal(await res.body.text(), 'cookies')
    const cookies = res.headers['set-cookie'] as string[]
    assert.equal(cookies.length, 3)
    assert.match(cookies[0]!, /^a=1/)
    assert.match(cookies[1]!, /^b=2; path=\/x/)
    assert.equal(cookies[2], 'c=3')
  })

  test("header('Location: ...') is a 302 with the location; a local redirect is a 302 too (as nginx)", async () => {
    const res = await request(`${origin}/redirect.php`)
    await res.body.dump()
    assert.equal(res.statusCode, 302)
    assert.equal(res.headers.location, '/target?x=1')
    const local = await request(`${origin}/local.php`)
    await local.body.dump()
    assert.equal(local.statusCode, 302)
    assert.equal(local.headers.location, '/local-target')
  })

  test('with response_buffering = false a 100 MB download streams with backpressure: PHP is held back while the client does not read', async () => {
    const progress = join(fpm.dir, 'progress.txt')
    writeFileSync(progress, '0')
    const total = 100 * 1024 * 1024
    const { port } = new URL(await serve({ response_buffering: false }))
    const received = await new Promise<{ bytes: number; heldBack: number; tail: string }>(
      (resolve, reject) => {
        const req = httpRequest({ host: '127.0.0.1', port, path: '/big.php', agent: false }, (res) => {
          let bytes = 0
          let last: Buffer = Buffer.alloc(0)
          let heldBack = -1
          res.on('data', (chunk: Buffer) => {
            bytes += chunk.length
            last = Buffer.concat([last, chunk.subarray(-16)]).subarray(-16)
            if (heldBack === -1 && bytes >= 1024 * 1024) {
              heldBack = 0
              res.pause()
              void (async () => {
                // Wait until PHP stops making progress: it is blocked writing to its socket.
                let previous = -1
                for (;;) {
                  await sleep(200)
                  const now = Number(readFileSync(progress, 'utf8') || '0')
                  if (now === previous) break
                  previous = now
                }
                heldBack = previous - bytes
                res.resume()
              })()
            }
          })
          res.on('end', () => resolve({ bytes, heldBack, tail: last.toString() }))
          res.on('error', reject)
        })
        req.on('error', reject)
        req.end()
      },
    )
    assert.equal(received.bytes, total)
    assert.equal(received.tail, '0123456789abcdef')
    // What PHP wrote beyond what the client had read sits in socket buffers and a few
    // records in Gatehouse: megabytes at most, never the 100 MB.
    assert.ok(
      received.heldBack >= 0 && received.heldBack < 32 * 1024 * 1024,
      `held back ${received.heldBack}`,
    )
  })

  test('response buffering (default): clients that do not read hold no PHP worker; an innocent request is served', async () => {
    // One more non-reading client than there are workers (max_children 3): unbuffered, the
    // fourth waits for a worker and the innocent request gets 503 or hangs (issue 18 item 3).
    const { port } = new URL(origin)
    const mb = 24
    const total = mb * 1024 * 1024
    const progressOf = (id: number) => join(fpm.dir, `progress${id}.txt`)
    const clients = [1, 2, 3, 4].map((id) => {
      writeFileSync(progressOf(id), '0')
      return new Promise<{ res: IncomingMessage }>((resolve, reject) => {
        const req = httpRequest(
          { host: '127.0.0.1', port, path: `/big.php?mb=${mb}&id=${id}`, agent: false },
          (res) => {
            res.pause()
            resolve({ res })
          },
        )
        req.on('error', reject)
        req.end()
      })
    })
    const responses = await Promise.all(clients)
    try {
      // Nobody reads, yet every script runs to its end: its output went to memory and disk.
      await eventually(
        () => [1, 2, 3, 4].every((id) => Number(readFileSync(progressOf(id), 'utf8') || '0') === total),
        'every script to finish while its client does not read',
      )
      const innocent = await get('/index.php')
      assert.equal(innocent.status, 200)
      const spooled = tempFds('gatehouse-fastcgi-')
      assert.ok(spooled > 0, 'the responses went to temporary files')
      // Each client then gets its whole body, intact.
      for (const { res } of responses) {
        let bytes = 0
        let last: Buffer = Buffer.alloc(0)
        res.on('data', (chunk: Buffer) => {
          bytes += chunk.length
          last = Buffer.concat([last, chunk.subarray(-16)]).subarray(-16)
        })
        res.resume()
        await new Promise((r) => res.once('end', r))
        assert.equal(bytes, total)
        assert.equal(last.toString(), '0123456789abcdef')
      }
      await eventually(() => tempFds('gatehouse-fastcgi-') === 0, 'the temporary files to be closed')
    } finally {
      for (const { res } of responses) res.destroy()
    }
  })

  test('PHP warnings and error_log() reach the Gatehouse error log, tagged with upstream and script', async () => {
    const logFile = join(fpm.dir, 'gatehouse-error.log')
    const logged = await serve({}, { log: { level: 'warn', error_log: logFile } })
    const res = await request(`${logged}/warn.php`)
    assert.equal(await res.body.text(), 'done')
    let lines: Record<string, unknown>[] = []
    for (let i = 0; i < 100; i++) {
      try {
        lines = readFileSync(logFile, 'utf8')
          .split('\n')
          .filter(Boolean)
          .map((l) => JSON.parse(l) as Record<string, unknown>)
      } catch {
        lines = []
      }
      if (lines.some((l) => String(l.msg).includes('custom line from php'))) break
      await sleep(50)
    }
    const warning = lines.find((l) => String(l.msg).includes('PHP Warning:  something odd'))
    assert.ok(warning, JSON.stringify(lines))
    assert.equal(warning.level, 40)
    assert.equal(warning.upstream, upstreamName())
    assert.equal(warning.script, join(root, 'warn.php'))
    assert.ok(lines.some((l) => String(l.msg).includes('custom line from php')))
  })

  test('CVE-2019-11043: a newline in the path stays in PATH_INFO, and the split is not broken', async () => {
    const q = 'a='.padEnd(1800, 'Q')
    const d = await dump(`/index.php/PHP%0Ais_the_best?${q}`)
    assert.equal(d.SCRIPT_NAME, '/index.php')
    assert.equal(d.SCRIPT_FILENAME, join(root, 'index.php'))
    assert.equal(d.PATH_INFO, '/PHP\nis_the_best')
    assert.equal(d.PATH_TRANSLATED, `${root}/PHP\nis_the_best`)
    // The exploit's shapes (phuip-fpizdam): many query lengths, PHP_VALUE smuggled in the path.
    for (let len = 1500; len < 1960; len += 23) {
      for (const path of ['/index.php/PHP_VALUE%0Asession.auto_start=1;;;', '/info.php/PHP%0Ais_the_best']) {
        const res = await get(`${path}?${'Q'.repeat(len)}`, {
          'D-Pisos': `8${'='.repeat(34)}D`,
          Ebut: 'mamku tvoyu',
        })
        assert.equal(res.status, 200, `${path} len ${len}: ${res.text}`)
        assert.equal(
          (JSON.parse(res.text) as Dump).PATH_INFO,
          path.includes('PHP_VALUE') ? '/PHP_VALUE\nsession.auto_start=1;;;' : '/PHP\nis_the_best',
        )
      }
    }
    // Every worker still has its settings untouched.
    for (let i = 0; i < 6; i++) {
      const after = await dump('/')
      assert.deepEqual(after.ini, { auto_prepend_file: '', 'session.auto_start': '0' })
    }
  })

  test('/uploads/x.jpg/a.php never runs the jpg, nor anything: 404', async () => {
    for (const path of [
      '/uploads/x.jpg/a.php',
      '/uploads/x.jpg/.php',
      '/uploads/x.jpg/index.php',
      '/uploads/x.jpg%2Fa.php',
      '/uploads/x.jpg/a.php/extra',
      '/uploads/nothing.php',
    ]) {
      const res = await get(path)
      assert.equal(res.status, 404, path)
      assert.ok(!res.text.includes('EXECUTED'), path)
    }
    // The jpg itself is a static file: its bytes as they are, never run.
    const jpg = await get('/uploads/x.jpg')
    assert.equal(jpg.status, 200)
    assert.match(jpg.text, /^<\?php echo "EXECUTED";/)
  })

  test('PHP sources and their backups (~, .bak, .orig, .save, .swp, #..#) are never served; hidden files and escapes are 404', async () => {
    for (const path of [
      '/secret.PHP',
      '/SECRET.PHP',
      '/source.phps',
      '/config.php~',
      '/config.php.bak',
      '/CONFIG.PHP.BAK',
      '/config.php.orig',
      '/config.php.save',
      '/config.php.swp',
      '/config.php.1',
      '/%23config.php%23',
      '/.env',
      '/escape.php',
      '/.env/index.php',
    ]) {
      const res = await get(path)
      assert.equal(res.status, 404, path)
      assert.ok(!res.text.includes('hunter2') && !res.text.includes('OUTSIDE'), path)
    }
  })

  test('request headers only ever become HTTP_*: PHP_VALUE and PHP_ADMIN_VALUE cannot be set from outside', async () => {
    const d = await dump('/', {
      PHP_VALUE: 'auto_prepend_file=/etc/passwd',
      'PHP-VALUE': 'auto_prepend_file=/etc/hostname',
      'PHP-ADMIN-VALUE': 'session.auto_start=1',
      Proxy: 'http://evil.example',
      Authorization: 'Bearer token',
    })
    assert.equal(d.PHP_VALUE, undefined)
    assert.equal(d.PHP_ADMIN_VALUE, undefined)
    assert.equal(d.HTTP_PHP_VALUE, 'auto_prepend_file=/etc/hostname')
    assert.equal(d.HTTP_PHP_ADMIN_VALUE, 'session.auto_start=1')
    assert.deepEqual(d.ini, { auto_prepend_file: '', 'session.auto_start': '0' })
    // Authorization passes (as nginx and Caddy do; PHP_AUTH_* need it).
    assert.equal(d.HTTP_AUTHORIZATION, 'Bearer token')
  })

  test('front_controller = false: what matches no file is a 404', async () => {
    const strict = await serve({ front_controller: false })
    const res = await request(`${strict}/no/such/page`)
    await res.body.dump()
    assert.equal(res.statusCode, 404)
    const ok = await request(`${strict}/info.php`)
    assert.equal(ok.statusCode, 200)
    await ok.body.dump()
  })

  test('cache_ttl = 0: a script that appears is run at once (default: within cache_ttl)', async () => {
    const fresh = await serve({ cache_ttl: 0 })
    const before = await request(`${fresh}/appears.php`)
    await before.body.dump()
    assert.equal(before.statusCode, 404)
    writeFileSync(join(root, 'appears.php'), '<?php echo "here";')
    const after = await request(`${fresh}/appears.php`)
    assert.equal(await after.body.text(), 'here')
  })

  test('past max_connections + queue, requests get 503', async () => {
    // A managed pool's bound is its workers and its own queue (docs/process-manager.md).
    const busy = await serve(
      backend === 'php-fpm'
        ? { max_connections: 1, queue: 1 }
        : { workers: { pm: 'static', max_children: 1, queue: 1 } },
    )
    const statuses = await Promise.all(
      [1, 2, 3].map(async () => {
        const res = await request(`${busy}/sleep.php`)
        await res.body.dump()
        return res.statusCode
      }),
    )
    assert.deepEqual(statuses.sort(), [200, 200, 503])
  })

  test('a client that leaves mid-download does not hurt the next request', async () => {
    const { port } = new URL(origin)
    await new Promise<void>((resolve, reject) => {
      const req = httpRequest({ host: '127.0.0.1', port, path: '/big.php', agent: false }, (res) => {
        res.once('data', () => {
          req.destroy()
          resolve()
        })
      })
      req.on('error', (err: NodeJS.ErrnoException) => (err.code === 'ECONNRESET' ? resolve() : reject(err)))
      req.end()
    })
    for (let i = 0; i < 4; i++) assert.equal((await dump('/')).SCRIPT_NAME, '/index.php')
  })
}

describe(
  'PHP front controller (php action) against php-fpm',
  { skip: phpFpmUnavailable() },
  frontControllerSuite('php-fpm'),
)
describe(
  "PHP front controller (php action) on Gatehouse's own php-cgi pool",
  { skip: phpFpmUnavailable() ?? phpCgiUnavailable() },
  frontControllerSuite('php-cgi pool'),
)

describe('php() as a library request listener', { skip: phpFpmUnavailable() }, () => {
  test('mounts in a plain node:http server at a prefix', async (t) => {
    const fpm = await startPhpFpm({ maxChildren: 1 })
    t.after(() => fpm.stop())
    const root = join(fpm.dir, 'www')
    mkdirSync(root)
    writeFileSync(join(root, 'info.php'), DUMP)
    const listener = php({ root, fastcgi: fpm.address, prefix: '/blog' })
    const server = createServer(listener)
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    t.after(async () => {
      await new Promise((resolve) => server.close(resolve))
      await listener.close()
    })
    const { port } = server.address() as { port: number }
    const res = await request(`http://127.0.0.1:${port}/blog/info.php/x`)
    const d = (await res.body.json()) as Dump
    assert.equal(d.SCRIPT_NAME, '/blog/info.php')
    assert.equal(d.PATH_INFO, '/x')
  })

  test('invalid options throw GH_ERR_CONFIG listing every problem', () => {
    assert.throws(
      () => php({ root: '/nonexistent-gatehouse', fastcgi: 'nowhere:x', prefix: 'blog' }),
      (err: { code?: string; problems?: string[] }) => {
        assert.equal(err.code, 'GH_ERR_CONFIG')
        assert.equal(err.problems?.length, 3)
        return true
      },
    )
  })
})

describe('splitPhpPath', () => {
  test('splits after the first segment ending in .php', () => {
    assert.deepEqual(splitPhpPath('/index.php'), ['/index.php', ''])
    assert.deepEqual(splitPhpPath('/index.php/a/b'), ['/index.php', '/a/b'])
    assert.deepEqual(splitPhpPath('/a.php/b.php/c'), ['/a.php', '/b.php/c'])
    assert.deepEqual(splitPhpPath('/dir.phpx/x.php'), ['/dir.phpx/x.php', ''])
    assert.deepEqual(splitPhpPath('/x.php.php'), ['/x.php.php', ''])
    assert.deepEqual(splitPhpPath('/uploads/x.jpg/a.php'), ['/uploads/x.jpg/a.php', ''])
    assert.deepEqual(splitPhpPath('/index.php/PHP\nis_the_best'), ['/index.php', '/PHP\nis_the_best'])
  })

  test('no split without a .php segment; a bare `.php` segment is not a script', () => {
    assert.equal(splitPhpPath('/'), null)
    assert.equal(splitPhpPath('/page.html'), null)
    assert.equal(splitPhpPath('/x.PHP'), null)
    assert.equal(splitPhpPath('/.php'), null)
    assert.equal(splitPhpPath('/a/.php/b'), null)
  })
})

/** Open deleted temporary files of this process whose names start with `prefix`. */
function tempFds(prefix: string): number {
  let n = 0
  for (const fd of readdirSync('/proc/self/fd')) {
    try {
      if (readlinkSync(`/proc/self/fd/${fd}`).includes(prefix)) n++
    } catch {
      // closed meanwhile
    }
  }
  return n
}
