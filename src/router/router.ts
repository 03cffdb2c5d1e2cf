/**
 * Route selection, in nginx's spirit (docs/routing.md):
 *
 * 1. Host picks the group: routes naming the exact host; else those whose `*.domain`
 *    pattern is the longest that matches; else the routes with no host. Once a group is
 *    chosen, no other group is consulted (like nginx server blocks).
 * 2. In the group, the path picks the route: an `exact` match wins; otherwise the first
 *    `regex` route (in config order) that matches; otherwise the longest `path` prefix.
 *    Prefixes match on segment boundaries: `/static` matches `/static` and `/static/x`,
 *    never `/staticx`.
 * 3. Among routes with the same exact path or prefix, the first whose methods include the
 *    request's method is taken. When routes match the path but none allows the method,
 *    the answer is 405 with Allow listing what would have been accepted. GET implies HEAD.
 */

export interface RouteSpec<T> {
  hosts?: readonly string[]
  path?: string
  exact?: string
  regex?: string
  methods?: readonly string[]
  target: T
}

interface CompiledRoute<T> {
  index: number
  kind: 'exact' | 'prefix' | 'regex'
  /** For prefix routes: the prefix without a trailing slash ('' for '/'). */
  value: string
  re?: RegExp
  methods: ReadonlySet<string> | null
  target: T
}

interface Group<T> {
  exact: Map<string, CompiledRoute<T>[]>
  regex: CompiledRoute<T>[]
  /** Sorted by prefix length, longest first; equal lengths keep config order. */
  prefix: CompiledRoute<T>[]
}

export type RouteResult<T> =
  | { kind: 'found'; target: T; index: number; prefix: string; params: readonly string[] }
  | { kind: 'not_found' }
  | { kind: 'method_not_allowed'; allow: readonly string[] }

function emptyGroup<T>(): Group<T> {
  return { exact: new Map(), regex: [], prefix: [] }
}

function methodsOf(methods: readonly string[] | undefined): ReadonlySet<string> | null {
  if (!methods) return null
  const set = new Set(methods.map((m) => m.toUpperCase()))
  if (set.has('GET')) set.add('HEAD')
  return set
}

export class Router<T> {
  private readonly exactHosts = new Map<string, Group<T>>()
  /** `*.example.com` stored as `.example.com`, longest first. */
  private readonly wildcardHosts: { suffix: string; group: Group<T> }[] = []
  private readonly anyHost: Group<T> = emptyGroup()

  constructor(specs: readonly RouteSpec<T>[]) {
    specs.forEach((spec, index) => {
      const route = compile(spec, index)
      if (!spec.hosts || spec.hosts.length === 0) {
        add(this.anyHost, route)
        return
      }
      for (const raw of new Set(spec.hosts.map((h) => h.toLowerCase()))) {
        if (raw.startsWith('*.')) {
          const suffix = raw.slice(1)
          let entry = this.wildcardHosts.find((w) => w.suffix === suffix)
          if (!entry) {
            entry = { suffix, group: emptyGroup() }
            this.wildcardHosts.push(entry)
          }
          add(entry.group, route)
        } else {
          let group = this.exactHosts.get(raw)
          if (!group) {
            group = emptyGroup()
            this.exactHosts.set(raw, group)
          }
          add(group, route)
        }
      }
    })
    this.wildcardHosts.sort((a, b) => b.suffix.length - a.suffix.length)
    for (const group of [
      this.anyHost,
      ...this.exactHosts.values(),
      ...this.wildcardHosts.map((w) => w.group),
    ]) {
      // Array.prototype.sort is stable: equal prefixes keep config order.
      group.prefix.sort((a, b) => b.value.length - a.value.length)
    }
  }

  private groupFor(host: string): Group<T> {
    const exact = this.exactHosts.get(host)
    if (exact) return exact
    for (const w of this.wildcardHosts) {
      if (host.endsWith(w.suffix) && host.length > w.suffix.length) return w.group
    }
    return this.anyHost
  }

  /** `path` must be decoded and normalized (no dot-segments), as RequestContext.path is. */
  match(host: string, path: string, method: string): RouteResult<T> {
    const group = this.groupFor(host)
    const allow = new Set<string>()
    const pick = (
      route: CompiledRoute<T>,
      prefix: string,
      params: readonly string[],
    ): RouteResult<T> | null => {
      if (route.methods && !route.methods.has(method)) {
        for (const m of route.methods) allow.add(m)
        return null
      }
      return { kind: 'found', target: route.target, index: route.index, prefix, params }
    }

    const exact = group.exact.get(path)
    if (exact) {
      for (const route of exact) {
        const found = pick(route, path, [])
        if (found) return found
      }
    }
    for (const route of group.regex) {
      const m = route.re!.exec(path)
      if (!m) continue
      const found = pick(
        route,
        '',
        m.slice(1).map((g) => g ?? ''),
      )
      if (found) return found
    }
    for (const route of group.prefix) {
      const p = route.value
      if (
        path.length === p.length ? path === p : path.startsWith(p) && path.charCodeAt(p.length) === 47 /* / */
      ) {
        const found = pick(route, p === '' ? '/' : p, [])
        if (found) return found
      }
    }
    if (allow.size > 0) return { kind: 'method_not_allowed', allow: [...allow].sort() }
    return { kind: 'not_found' }
  }
}

function compile<T>(spec: RouteSpec<T>, index: number): CompiledRoute<T> {
  const methods = methodsOf(spec.methods)
  if (spec.exact !== undefined)
    return { index, kind: 'exact', value: spec.exact, methods, target: spec.target }
  if (spec.regex !== undefined) {
    return {
      index,
      kind: 'regex',
      value: spec.regex,
      re: new RegExp(spec.regex),
      methods,
      target: spec.target,
    }
  }
  const path = spec.path ?? '/'
  const value = path.length > 1 && path.endsWith('/') ? path.slice(0, -1) : path === '/' ? '' : path
  return { index, kind: 'prefix', value, methods, target: spec.target }
}

function add<T>(group: Group<T>, route: CompiledRoute<T>): void {
  if (route.kind === 'exact') {
    const list = group.exact.get(route.value) ?? []
    list.push(route)
    group.exact.set(route.value, list)
  } else if (route.kind === 'regex') {
    group.regex.push(route)
  } else {
    group.prefix.push(route)
  }
}
