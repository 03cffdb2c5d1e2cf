/*
 * Upstream groups (issue 15 item 2): several servers behind one name, balanced, health-
 * checked and retried, for any client gateway. Nothing here knows a protocol. How a gateway
 * uses it (notes/upstream-api.md has the long form):
 *
 *   const group = takeGroup(spec, probe, log)        // shared by name; releaseGroup() on close
 *   const { result, lease } = await tryUpstreams({
 *     group, retryable: isIdempotent(method) && bodyReplayable, signal,
 *     attempt: (server) => client.request(server.address, ...),   // up to the response head
 *     status: (r) => r.status, discard: (r) => r.body.destroy(),
 *   })
 *   // relay result; then lease.release() (or lease.release('failure') if the body broke)
 */
export * from './group.js'
export * from './retry.js'
export * from './registry.js'
export * from './schema.js'
