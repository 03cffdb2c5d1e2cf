/*
 * The child of copy-fd.ts: every handle it is sent, it sends back once (Node's IPC passes a
 * handle as a new descriptor with SCM_RIGHTS). It ends when the parent disconnects.
 */
process.on('message', (_message: unknown, handle: unknown) => {
  process.send!({ copy: true }, handle as never)
})
