/* global Buffer, URL, console, process, setTimeout -- a Node script outside the TypeScript build */
// Probe for docs/architecture.md, "Using more than one core": can worker-thread fronts share
// one listening socket? The first front listens on a free port and shares its fd; the others
// listen on that fd (server.listen({ fd })). Run with FRONTS=N, load it (wrk), then send
// SIGUSR2 to print the requests each front served.
//   node bench/probes/front-threads.mjs & wrk -t1 -c64 -d3s http://127.0.0.1:PORT/; kill -USR2 PID
import http from 'node:http'
import { Worker, isMainThread, parentPort, threadId, workerData } from 'node:worker_threads'

const FRONTS = Number(process.env.FRONTS ?? 2)

if (isMainThread) {
  const counts = new Map()
  const fronts = []
  const start = (fd) => {
    const w = new Worker(new URL(import.meta.url), { workerData: { fd } })
    w.on('message', (m) => {
      if (m.listening) {
        console.log(`listening on http://127.0.0.1:${m.port}/ pid ${process.pid}`)
        for (let i = 1; i < FRONTS; i++) start(m.fd)
      } else counts.set(m.thread, m.count)
    })
    fronts.push(w)
  }
  start(null)
  process.on('SIGUSR2', () => {
    for (const w of fronts) w.postMessage('count')
    setTimeout(() => console.log('requests per front:', JSON.stringify(Object.fromEntries(counts))), 200)
  })
  process.on('SIGTERM', () => process.exit(0))
} else {
  let count = 0
  const body = Buffer.from('Hello, World!')
  const server = http.createServer((req, res) => {
    count++
    res.writeHead(200, ['content-type', 'text/plain', 'content-length', '13'])
    res.end(body)
  })
  if (workerData.fd === null)
    server.listen(0, '127.0.0.1', () =>
      parentPort.postMessage({ listening: true, port: server.address().port, fd: server._handle.fd }),
    )
  else server.listen({ fd: workerData.fd })
  parentPort.on('message', () => parentPort.postMessage({ thread: threadId, count }))
}
