/*
 * `gatehouse serve --reload` (issue 17): watch the Python apps' source and roll their workers
 * when it changes, as uvicorn's and gunicorn's --reload do. A development aid, off by default.
 *
 * The watching is chokidar's (v4: one dependency, ESM, Node >= 14), not Node 20's
 * fs.watch({ recursive: true }): on Linux, Node 20 implements the recursive mode in
 * JavaScript with one inotify watch per file *and* directory, found by a synchronous walk of
 * the whole tree, with no way to leave a subtree out; a `.venv` or `.git` in the app's
 * directory (the usual layout) would cost thousands of watches and block the event loop at
 * start. chokidar takes an `ignored` test that keeps it out of those directories altogether,
 * and it folds an editor's atomic save (write a temp file, rename it over the source) into
 * one change.
 */
import { basename, isAbsolute, relative, sep } from 'node:path'
import type { Stats } from 'node:fs'
import { watch, type FSWatcher } from 'chokidar'

/** The default of --reload-include: uvicorn's. */
export const DEFAULT_RELOAD_INCLUDE = ['*.py']
/** How long the tree must stay quiet before a reload: one save often touches several files. */
export const RELOAD_DEBOUNCE_MS = 250

/** Directories never watched, whatever --reload-include says. */
const IGNORED_DIRS = new Set(['__pycache__', 'node_modules'])

/**
 * Editors' temporary and backup files: `.#app.py` (Emacs lock), `#app.py#`, `app.py~`,
 * `.app.py.swp` (Vim; a dotfile anyway), Vim's `4913` probe, `*.tmp`, JetBrains' `___jb_tmp___`.
 */
function isEditorTemp(name: string): boolean {
  return (
    name.endsWith('~') ||
    (name.startsWith('#') && name.endsWith('#')) ||
    /\.(swp|swx|swo|tmp|bak|orig)$/.test(name) ||
    name === '4913' ||
    name.endsWith('___jb_tmp___') ||
    name.endsWith('___jb_old___')
  )
}

/**
 * A glob as --reload-include takes it -> a RegExp: `*` and `?` stay within one path segment,
 * `**` crosses them, `[abc]` is a class. A glob without `/` matches the file's name (`*.py`
 * matches pkg/views.py); one with `/` matches the path relative to the watched directory.
 */
export function globToRegExp(glob: string): RegExp {
  let out = ''
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i]!
    if (c === '*') {
      if (glob[i + 1] === '*') {
        // `**/` matches no directory as well as several.
        if (glob[i + 2] === '/') {
          out += '(?:.*/)?'
          i += 2
        } else {
          out += '.*'
          i += 1
        }
      } else out += '[^/]*'
    } else if (c === '?') out += '[^/]'
    else if (c === '[') {
      const end = glob.indexOf(']', i + 1)
      if (end === -1) out += '\\['
      else {
        const body = glob.slice(i + 1, end).replace(/\\/g, '\\\\')
        out += `[${body.startsWith('!') ? `^${body.slice(1)}` : body}]`
        i = end
      }
    } else out += c.replace(/[.+^${}()|\\]/g, '\\$&')
  }
  return new RegExp(`^${out}$`)
}

export interface SourceWatcherOptions {
  /** Absolute directories, watched recursively. */
  dirs: readonly string[]
  /** Globs a changed file must match (default DEFAULT_RELOAD_INCLUDE). */
  include?: readonly string[]
  /** Quiet time before onChange (default RELOAD_DEBOUNCE_MS). */
  debounceMs?: number
  /** The changed files (absolute paths, in the order first seen), once the tree is quiet. */
  onChange: (files: string[]) => void
  onError?: (err: unknown) => void
}

/**
 * Watches `dirs` for added, changed or removed files matching `include`, leaving out
 * dotfiles and dot-directories (.git, .venv), __pycache__, node_modules and editors'
 * temporary files, and reports them debounced.
 */
export class SourceWatcher {
  private readonly watcher: FSWatcher
  private readonly include: { re: RegExp; path: boolean }[]
  private readonly debounceMs: number
  private pending: string[] = []
  private timer: NodeJS.Timeout | undefined
  private dirs: string[]
  readonly ready: Promise<void>

  constructor(private readonly options: SourceWatcherOptions) {
    this.dirs = [...new Set(options.dirs)]
    this.include = (options.include ?? DEFAULT_RELOAD_INCLUDE).map((g) => ({
      re: globToRegExp(g),
      path: g.includes('/'),
    }))
    this.debounceMs = options.debounceMs ?? RELOAD_DEBOUNCE_MS
    this.watcher = watch(this.dirs, {
      ignoreInitial: true,
      // Called once with the path alone, then with its stats: a file that --reload-include
      // does not name is left out once it is known to be a file.
      ignored: (path: string, stats?: Stats) => this.ignored(path, stats),
    })
    this.ready = new Promise((resolve) => this.watcher.once('ready', () => resolve()))
    const changed = (path: string) => {
      if (!this.included(path)) return
      if (!this.pending.includes(path)) this.pending.push(path)
      clearTimeout(this.timer)
      this.timer = setTimeout(() => this.flush(), this.debounceMs)
    }
    this.watcher.on('add', changed).on('change', changed).on('unlink', changed)
    this.watcher.on('error', (err) => this.options.onError?.(err))
  }

  /** The watched directory `path` is in, and the path relative to it (null: outside them all). */
  private within(path: string): string | null {
    for (const dir of this.dirs) {
      const rel = relative(dir, path)
      if (rel === '') return ''
      if (!rel.startsWith('..') && !isAbsolute(rel)) return rel
    }
    return null
  }

  private ignored(path: string, stats?: Stats): boolean {
    const rel = this.within(path)
    if (rel === null || rel === '') return false
    const parts = rel.split(sep)
    // Segments below the watched directory only: the directory itself may be a dot-directory.
    if (parts.some((p) => p.startsWith('.') || IGNORED_DIRS.has(p))) return true
    if (isEditorTemp(parts[parts.length - 1]!)) return true
    return stats?.isFile() === true && !this.included(path)
  }

  private included(path: string): boolean {
    const rel = this.within(path)
    if (rel === null || rel === '') return false
    const name = basename(path)
    if (name.startsWith('.') || isEditorTemp(name)) return false
    const slashed = rel.split(sep).join('/')
    return this.include.some(({ re, path: whole }) => re.test(whole ? slashed : name))
  }

  private flush(): void {
    this.timer = undefined
    const files = this.pending
    this.pending = []
    if (files.length > 0) this.options.onChange(files)
  }

  /** Watch these directories from now on (a SIGHUP changed the apps' chdir). */
  setDirs(dirs: readonly string[]): void {
    const next = [...new Set(dirs)]
    const gone = this.dirs.filter((d) => !next.includes(d))
    const added = next.filter((d) => !this.dirs.includes(d))
    this.dirs = next
    if (gone.length > 0) this.watcher.unwatch(gone)
    if (added.length > 0) this.watcher.add(added)
  }

  async close(): Promise<void> {
    clearTimeout(this.timer)
    await this.watcher.close()
  }
}

/**
 * Runs `reload` for each batch of changes at once, even while an earlier one is still under
 * way: a rolling reload starts its later workers from what is on disk by then, so an edit
 * made mid-roll (a broken one, say) is in them, and waiting for that roll to end could wait
 * on a pool that is retrying a broken app. A new reload supersedes the one under way (the
 * pool starts a newer generation); only the newest reload's outcome is reported.
 */
export function latestReloads(
  reload: () => Promise<void>,
  report: (outcome: { ok: true } | { ok: false; err: unknown }) => void,
): () => void {
  let latest = 0
  return () => {
    const n = ++latest
    reload().then(
      () => n === latest && report({ ok: true }),
      (err: unknown) => n === latest && report({ ok: false, err }),
    )
  }
}
