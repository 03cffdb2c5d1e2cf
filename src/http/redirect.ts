/*
 * `redirect_http` on a plain `listen` entry: every request there is sent to the same host
 * and target over HTTPS (nginx's `return 301 https://$host$request_uri;`, Caddy's automatic
 * redirect). No route runs on that listener.
 */
import type { IncomingMessage, ServerResponse } from 'node:http'
import { sendStatus } from '../core/respond.js'
import { parseHost } from './request-target.js'

/**
 * A request listener answering 301 (GET, HEAD) or 308 (other methods: the method and body
 * are kept, RFC 9110 15.4.9) with `Location: https://HOST[:PORT]TARGET`. `httpsPort()` is
 * the port to send to (443 is left out of the URL); a request without a usable Host, or
 * whose target is not origin-form, gets 400.
 */
export function redirectToHttps(httpsPort: () => number) {
  return (req: IncomingMessage, res: ServerResponse): void => {
    const head = req.method === 'HEAD'
    const host = parseHost(req.headers.host ?? '')
    const target = req.url ?? '/'
    if (!host || host[0] === '' || !target.startsWith('/')) {
      sendStatus(res, 400, { head, close: true })
      return
    }
    const port = httpsPort()
    const name = host[0].includes(':') && !host[0].startsWith('[') ? `[${host[0]}]` : host[0]
    const location = `https://${name}${port === 443 ? '' : `:${port}`}${target}`
    const status = req.method === 'GET' || head ? 301 : 308
    sendStatus(res, status, { head, headers: { location } })
  }
}
