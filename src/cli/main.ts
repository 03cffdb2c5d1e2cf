#!/usr/bin/env node
/*
 * The `gatehouse` command's entry. startup-heap.ts runs first, before the program's modules
 * are even loaded (a static import would load them all before any code here runs): it keeps
 * V8's young generation small while they load (issue 13 item 4). The command is program.ts.
 */
import './startup-heap.js'

const { main } = await import('./program.js')
await main(process.argv)
