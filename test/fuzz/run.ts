/*
 * `npm run fuzz -- --minutes N [--seed S]`: the fuzz files of test/fuzz/ with
 * GATEHOUSE_FUZZ_MINUTES=N, so each property runs about N minutes rather than its small
 * default count (test/support/fuzz.ts). Not a .test.js file, so `npm test` does not run it.
 */
import { spawn } from 'node:child_process'
import { readdirSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'

const { values } = parseArgs({
  options: {
    minutes: { type: 'string', default: '1' },
    seed: { type: 'string' },
  },
})
const minutes = Number(values.minutes)
if (!(minutes > 0)) {
  console.error(`--minutes ${values.minutes}: a number of minutes above 0`)
  process.exit(2)
}
if (values.seed !== undefined && !/^-?\d+$/.test(values.seed)) {
  console.error(`--seed ${values.seed}: an integer`)
  process.exit(2)
}

const dir = fileURLToPath(new URL('.', import.meta.url))
const files = readdirSync(dir)
  .filter((f) => f.endsWith('.test.js'))
  .sort()
  .map((f) => join(dir, f))
console.log(`fuzzing ${files.length} files, about ${minutes} min per property`)
const child = spawn(process.execPath, ['--test', '--test-concurrency=2', ...files], {
  stdio: 'inherit',
  env: {
    ...process.env,
    GATEHOUSE_FUZZ_MINUTES: String(minutes),
    ...(values.seed !== undefined ? { GATEHOUSE_FUZZ_SEED: values.seed } : {}),
  },
})
child.on('exit', (code, signal) => process.exit(code ?? (signal ? 1 : 0)))
