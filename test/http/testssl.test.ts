/*
 * The TLS defaults as an outside scanner sees them (issue 14): Debian's testssl.sh
 * checks the protocols, the cipher categories, forward secrecy and the known TLS
 * vulnerabilities (Heartbleed, CCS, ROBOT, renegotiation, CRIME, BREACH, POODLE, SWEET32,
 * FREAK, DROWN, LOGJAM, BEAST, LUCKY13, RC4) of a listener with the default settings.
 * Slow (about a minute): one scan.
 */
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { test } from 'node:test'
import { serveCli, tempDir } from '../support/helpers.js'
import { makeCa, makeCert } from '../support/tls-certs.js'

interface Finding {
  id: string
  severity: string
  finding: string
}

test('testssl.sh finds nothing weak in the TLS defaults: TLS 1.2 and 1.3 only, AEAD suites with forward secrecy, no known vulnerability', async (t) => {
  const dir = tempDir(t, 'gh-testssl-')
  const ca = makeCa(dir)
  const leaf = makeCert(ca, 'localhost', ['localhost', 'IP:127.0.0.1'])
  const pub = join(dir, 'public')
  mkdirSync(pub)
  writeFileSync(join(pub, 'index.html'), '<p>hello</p>\n')
  const { address } = await serveCli(t, [
    '--listen',
    '127.0.0.1:0',
    '--tls-cert',
    leaf.cert,
    '--tls-key',
    leaf.key,
    '--static',
    pub,
  ])

  const json = join(dir, 'testssl.json')
  // -p protocols, -s cipher categories, -f forward secrecy, -U vulnerabilities.
  const args = [
    '--quiet',
    '--color',
    '0',
    '--warnings',
    'batch',
    '-p',
    '-s',
    '-f',
    '-U',
    '--jsonfile',
    json,
    address,
  ]
  const out = await new Promise<string>((resolve, reject) =>
    execFile(
      '/usr/bin/testssl',
      args,
      { env: { PATH: '/usr/bin:/bin', HOME: dir }, timeout: 300_000, maxBuffer: 16 << 20 },
      (err, stdout) => (err && err.killed ? reject(err) : resolve(stdout)),
    ),
  )
  const findings = JSON.parse(readFileSync(json, 'utf8')) as Finding[]
  const byId = new Map(findings.map((f) => [f.id, f]))
  const finding = (id: string) => byId.get(id)?.finding ?? `(no ${id} in the scan)`
  for (const old of ['SSLv2', 'SSLv3', 'TLS1', 'TLS1_1']) assert.match(finding(old), /not offered/, old)
  assert.match(finding('TLS1_2'), /^offered/)
  assert.match(finding('TLS1_3'), /^offered/)
  for (const weak of [
    'cipherlist_NULL',
    'cipherlist_aNULL',
    'cipherlist_EXPORT',
    'cipherlist_LOW',
    'cipherlist_3DES_IDEA',
  ])
    assert.match(finding(weak), /not offered/, weak)
  assert.match(finding('cipherlist_AVERAGE'), /not offered/, 'obsolete CBC suites')
  assert.match(finding('PFS'), /^offered/)
  // Every finding of the scan is OK or informational: nothing LOW, MEDIUM, HIGH or CRITICAL.
  // (testssl's WARN is about the scan itself, e.g. the local openssl lacking GOST engines.)
  const bad = findings.filter((f) => !['OK', 'INFO', 'WARN'].includes(f.severity))
  assert.deepEqual(bad, [], out)
  assert.ok(findings.filter((f) => f.severity === 'OK').length >= 20, out)
})
