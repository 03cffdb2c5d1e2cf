/*
 * `gatehouse ctl`: the control API's client (docs/control-api.md), for people and scripts
 * that would otherwise write `curl --unix-socket`. Prints the answer (JSON) on stdout; an
 * answer of 4xx or 5xx goes to stderr with exit code 1, as does a server that cannot be reached.
 */
import { readFileSync } from 'node:fs'
import { request } from 'node:http'
import { extname } from 'node:path'
import type { Command } from 'commander'
import { parse as parseToml } from 'smol-toml'
import { parseListenAddress } from '../core/address.js'
// From state.js, not server.js: `gatehouse serve` loads the server (and the status gateway) only when configured.
import { TOKEN_ENV } from '../control/state.js'

/** Where `gatehouse ctl` looks without --control: $GATEHOUSE_CONTROL, else this. */
export const DEFAULT_CONTROL = 'unix:/run/gatehouse/control.sock'

interface CtlOptions {
  control?: string
  token?: string
}

interface Answer {
  status: number
  body: string
}

function send(options: CtlOptions, method: string, path: string, body?: string): Promise<Answer> {
  const address = options.control ?? process.env.GATEHOUSE_CONTROL ?? DEFAULT_CONTROL
  const spec = parseListenAddress(address)
  if (spec.kind === 'fd')
    return Promise.reject(new Error(`--control ${address}: ctl connects to an address, not a descriptor`))
  const token = options.token ?? process.env[TOKEN_ENV]
  const headers: Record<string, string | number> = {}
  if (token) headers.authorization = `Bearer ${token}`
  if (body !== undefined) {
    headers['content-type'] = 'application/json'
    headers['content-length'] = Buffer.byteLength(body)
  }
  return new Promise((resolve, reject) => {
    const req = request({
      ...(spec.kind === 'unix' ? { socketPath: spec.path } : { host: spec.host, port: spec.port }),
      method,
      path,
      headers,
    })
    req.on('error', (err: NodeJS.ErrnoException) =>
      reject(new Error(`cannot reach the control API at ${address}: ${err.code ?? err.message}`)),
    )
    req.on('response', (res) => {
      let text = ''
      res.setEncoding('utf8')
      res.on('data', (c: string) => (text += c))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }))
    })
    req.end(body)
  })
}

/** `routes/0` and `/config/routes/0` both name /config/routes/0; `/status` stays as it is. */
function apiPath(path: string): string {
  return path.startsWith('/') ? path : `/config/${path}`
}

/** A file's (or stdin's, for `-`) JSON to send; a .toml file is read as TOML. */
function readBody(file: string): string {
  const text = readFileSync(file === '-' ? 0 : file, 'utf8')
  if (file !== '-' && extname(file).toLowerCase() === '.toml') return JSON.stringify(parseToml(text))
  return text
}

async function run(options: CtlOptions, method: string, path: string, body?: string): Promise<void> {
  let answer: Answer
  try {
    answer = await send(options, method, path, body)
  } catch (err) {
    process.stderr.write(`gatehouse: ${(err as Error).message}\n`)
    process.exit(1)
  }
  const out = answer.body.endsWith('\n') || answer.body === '' ? answer.body : `${answer.body}\n`
  if (answer.status >= 400) {
    process.stderr.write(out)
    process.exit(1)
  }
  process.stdout.write(out)
}

/** The `ctl` command and its subcommands, on `program` (so that they inherit its exit handling). */
export function ctlCommand(program: Command): Command {
  const ctl = program
    .command('ctl')
    .description(
      "talk to a running server's control API (docs/control-api.md); prints JSON, exit 1 on an error answer",
    )
    .option(
      '--control <address>',
      `the control API: unix:/path or host:port (default $GATEHOUSE_CONTROL, else ${DEFAULT_CONTROL})`,
    )
    .option('--token <token>', `bearer token (default $${TOKEN_ENV}; the variable keeps it out of ps)`)
  const opts = () => ctl.opts<CtlOptions>()
  ctl
    .command('get')
    .description('show the configuration, or the part at PATH (/config/routes/0, or routes/0)')
    .argument('[path]', 'a /config path', '/config')
    .action((path: string) => run(opts(), 'GET', apiPath(path)))
  ctl
    .command('put')
    .description(
      "replace (or create) the value at PATH with FILE's JSON (- for stdin; a .toml file is read as TOML)",
    )
    .argument('<path>', 'a /config path')
    .argument('<file>', 'a JSON file, or - for stdin')
    .action((path: string, file: string) => run(opts(), 'PUT', apiPath(path), readBody(file)))
  ctl
    .command('post')
    .description("append FILE's JSON to the array at PATH (- for stdin)")
    .argument('<path>', 'a /config path naming an array (routes)')
    .argument('<file>', 'a JSON file, or - for stdin')
    .action((path: string, file: string) => run(opts(), 'POST', apiPath(path), readBody(file)))
  ctl
    .command('delete')
    .description('remove the value at PATH')
    .argument('<path>', 'a /config path')
    .action((path: string) => run(opts(), 'DELETE', apiPath(path)))
  ctl
    .command('status')
    .description('pools, listeners, routes and the front counters')
    .action(() => run(opts(), 'GET', '/status'))
  ctl
    .command('metrics')
    .description('the Prometheus metrics (text)')
    .action(() => run(opts(), 'GET', '/metrics'))
  ctl
    .command('reload')
    .description("rolling restart of one route's worker pool: POOL is the route's index in /config/routes")
    .argument('<pool>', 'the route index (as `gatehouse ctl status` lists the routes)')
    .action((pool: string) => run(opts(), 'POST', `/control/pools/${encodeURIComponent(pool)}/reload`))
  return ctl
}
