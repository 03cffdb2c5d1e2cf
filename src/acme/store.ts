/*
 * ACME state on disk: the account key and each host's certificate and key. Laid out as
 * Caddy does, per CA so that a staging and a production certificate never mix:
 *
 *   STORAGE/                                 0700
 *     <ca>/account.key                       0600  (the ACME account's private key, PEM)
 *     <ca>/certificates/<host>/<host>.crt    0600  (leaf first, then the chain)
 *     <ca>/certificates/<host>/<host>.key    0600
 *
 * `<ca>` is the directory URL's host and path (`acme-v02.api.letsencrypt.org-directory`).
 * Every write goes to a temporary file in the same directory, created 0600, synced, then
 * renamed over the old one: a reader (or a crash) sees the old file or the new one.
 */
import { randomBytes } from 'node:crypto'
import {
  chmodSync,
  closeSync,
  fsyncSync,
  mkdirSync,
  openSync,
  readFileSync,
  renameSync,
  rmSync,
  writeSync,
} from 'node:fs'
import { join } from 'node:path'

/** `https://localhost:14000/dir` -> `localhost-14000-dir`. */
export function caFolderName(directory: string): string {
  const url = new URL(directory)
  return `${url.host}${url.pathname}`.replace(/[^A-Za-z0-9.]+/g, '-').replace(/-+$/, '')
}

/** A directory of mode 0700 (made so, or tightened if it exists with more). */
function privateDir(dir: string): void {
  mkdirSync(dir, { recursive: true, mode: 0o700 })
  chmodSync(dir, 0o700)
}

/** Write `data` to `file` with mode 0600: a temporary file, fsync, rename over. */
function writeAtomic(file: string, data: string | Buffer): void {
  const temp = `${file}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`
  const fd = openSync(temp, 'wx', 0o600)
  try {
    writeSync(fd, typeof data === 'string' ? Buffer.from(data) : data)
    fsyncSync(fd)
  } catch (err) {
    closeSync(fd)
    rmSync(temp, { force: true })
    throw err
  }
  closeSync(fd)
  renameSync(temp, file)
}

function readIfThere(file: string): Buffer | undefined {
  try {
    return readFileSync(file)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw err
  }
}

export interface StoredCertificate {
  cert: Buffer
  key: Buffer
}

export class AcmeStore {
  private readonly caDir: string

  constructor(
    readonly root: string,
    directory: string,
  ) {
    this.caDir = join(root, caFolderName(directory))
  }

  private hostDir(host: string): string {
    return join(this.caDir, 'certificates', host)
  }

  /** Where `host`'s certificate and key are (whether or not they exist yet). */
  certificatePaths(host: string): { cert: string; key: string } {
    const dir = this.hostDir(host)
    return { cert: join(dir, `${host}.crt`), key: join(dir, `${host}.key`) }
  }

  /** The account key, or undefined when no account was made with this CA yet. */
  readAccountKey(): Buffer | undefined {
    return readIfThere(join(this.caDir, 'account.key'))
  }

  writeAccountKey(pem: Buffer): void {
    for (const dir of [this.root, this.caDir]) privateDir(dir)
    writeAtomic(join(this.caDir, 'account.key'), pem)
  }

  /** `host`'s stored certificate and key; undefined when either is missing. */
  readCertificate(host: string): StoredCertificate | undefined {
    const paths = this.certificatePaths(host)
    const cert = readIfThere(paths.cert)
    const key = readIfThere(paths.key)
    return cert && key ? { cert, key } : undefined
  }

  /** The key first: a crash between the two renames leaves a pair that does not match, read as none. */
  writeCertificate(host: string, stored: StoredCertificate): void {
    for (const dir of [this.root, this.caDir, join(this.caDir, 'certificates'), this.hostDir(host)])
      privateDir(dir)
    const paths = this.certificatePaths(host)
    writeAtomic(paths.key, stored.key)
    writeAtomic(paths.cert, stored.cert)
  }
}
