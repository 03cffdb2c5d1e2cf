import assert from 'node:assert/strict'
import { test } from 'node:test'
import { GatehouseError } from '../../src/core/errors.js'
import { missingOrThrow } from '../../src/core/fs-errors.js'

const errno = (code: string) => Object.assign(new Error(code), { code })

test('missingOrThrow: no such file is null, no permission is GH_ERR_FORBIDDEN, the rest is rethrown', () => {
  for (const code of ['ENOENT', 'ENOTDIR', 'ELOOP', 'ENAMETOOLONG'])
    assert.equal(missingOrThrow(errno(code), '/x'), null, code)
  for (const code of ['EACCES', 'EPERM'])
    assert.throws(
      () => missingOrThrow(errno(code), '/x'),
      (err: unknown) =>
        err instanceof GatehouseError && err.code === 'GH_ERR_FORBIDDEN' && err.status === 403,
    )
  const other = errno('EIO')
  assert.throws(
    () => missingOrThrow(other, '/x'),
    (err: unknown) => err === other,
  )
})
