/** Small HTTP helpers shared by the CGI test files. */
import { Agent, request } from 'node:http'

export interface Reply {
  status: number
  statusMessage: string
  headers: Record<string, string | string[] | undefined>
  rawHeaders: string[]
  body: Buffer
  text: string
}

export interface RequestOptions {
  method?: string
  headers?: Record<string, string | string[]>
  body?: string | Buffer | (string | Buffer)[]
  /** Send the body with Transfer-Encoding: chunked (one chunk per element). */
  chunked?: boolean
}

/** One request on a fresh connection; resolves with the whole response. */
export function fetchText(port: number, path: string, options: RequestOptions = {}): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const agent = new Agent({ keepAlive: false })
    const headers: Record<string, string | string[]> = { ...options.headers }
    const parts =
      options.body === undefined ? [] : Array.isArray(options.body) ? options.body : [options.body]
    if (options.chunked) headers['transfer-encoding'] = 'chunked'
    else if (options.body !== undefined)
      headers['content-length'] = String(parts.reduce((n, p) => n + Buffer.byteLength(p), 0))
    const req = request(
      { host: '127.0.0.1', port, path, method: options.method ?? 'GET', headers, agent },
      (res) => {
        const chunks: Buffer[] = []
        res.on('data', (c: Buffer) => chunks.push(c))
        res.on('error', reject)
        res.on('end', () => {
          agent.destroy()
          const body = Buffer.concat(chunks)
          resolve({
            status: res.statusCode ?? 0,
            statusMessage: res.statusMessage ?? '',
            headers: res.headers,
            rawHeaders: res.rawHeaders,
            body,
            text: body.toString('utf8'),
          })
        })
      },
    )
    req.on('error', (err) => {
      agent.destroy()
      reject(err)
    })
    for (const p of parts) req.write(p)
    req.end()
  })
}

/** `status`, header lines and the (de-chunked) body of a raw HTTP/1.1 response text. */
export function parseRawResponse(text: string): {
  status: number
  reason: string
  headers: [string, string][]
  body: string
} {
  const end = text.indexOf('\r\n\r\n')
  const head = end === -1 ? text : text.slice(0, end)
  let body = end === -1 ? '' : text.slice(end + 4)
  const [statusLine = '', ...lines] = head.split('\r\n')
  const m = /^HTTP\/1\.[01] (\d{3}) ?(.*)$/.exec(statusLine)
  const headers = lines.map((l) => {
    const i = l.indexOf(':')
    return [l.slice(0, i), l.slice(i + 1).trim()] as [string, string]
  })
  if (headers.some(([n, v]) => n.toLowerCase() === 'transfer-encoding' && v === 'chunked')) {
    let out = ''
    let rest = body
    for (;;) {
      const nl = rest.indexOf('\r\n')
      if (nl === -1) break
      const size = Number.parseInt(rest.slice(0, nl), 16)
      if (!size) break
      out += rest.slice(nl + 2, nl + 2 + size)
      rest = rest.slice(nl + 2 + size + 2)
    }
    body = out
  }
  return { status: m ? Number(m[1]) : 0, reason: m?.[2] ?? '', headers, body }
}

/** `NAME=VALUE` lines (output of env(1)) -> object. */
export function envLines(text: string): Record<string, string> {
  const out: Record<string, string> = {}
  for (const line of text.split('\n')) {
    const eq = line.indexOf('=')
    if (eq > 0) out[line.slice(0, eq)] = line.slice(eq + 1)
  }
  return out
}

/** Poll `check` every 50 ms until it is true or `ms` passes; returns its last value. */
export async function eventually(check: () => boolean | Promise<boolean>, ms = 10_000): Promise<boolean> {
  const deadline = Date.now() + ms
  for (;;) {
    if (await check()) return true
    if (Date.now() > deadline) return false
    await new Promise((r) => setTimeout(r, 50))
  }
}
