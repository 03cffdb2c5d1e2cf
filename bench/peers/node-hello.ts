/*
 * A bare node:http hello server: the upstream of the proxy scenarios, for Gatehouse's
 * `proxy` and nginx's `proxy_pass` alike. `node node-hello.js PORT`.
 */
import { createServer } from 'node:http'

const body = Buffer.from('Hello, world!\n')
const server = createServer((_req, res) => {
  res.writeHead(200, { 'content-type': 'text/plain', 'content-length': body.length })
  res.end(body)
})
// Longer than either proxy keeps an idle upstream connection: the proxies close them, not us.
server.keepAliveTimeout = 65_000
server.listen(Number(process.argv[2]), '127.0.0.1')
process.on('SIGTERM', () => server.close(() => process.exit(0)))
