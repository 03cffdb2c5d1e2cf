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
    // Methods of routes that matched the path but not the method (for 405's Allow); made
    // only when one does, so a request that is routed allocates nothing but its result.
    let allow: Set<string> | null = null

    const exact = group.exact.get(path)
    if (exact) {
      for (const route of exact) {
        if (route.methods && !route.methods.has(method)) {
          allow = addMethods(allow, route.methods)
          continue
        }
        return found(route, path, NO_PARAMS)
      }
    }
    for (const route of group.regex) {
      const m = route.re!.exec(path)
      if (!m) continue
      if (route.methods && !route.methods.has(method)) {
        allow = addMethods(allow, route.methods)
        continue
      }
      return found(
        route,
        '',
        m.slice(1).map((g) => g ?? ''),
      )
    }
    for (const route of group.prefix) {
      const p = route.value
      if (
        path.length === p.length ? path === p : path.startsWith(p) && path.charCodeAt(p.length) === 47 /* / */
      ) {
        if (route.methods && !route.methods.has(method)) {
          allow = addMethods(allow, route.methods)
          continue
        }
        return found(route, p === '' ? '/' : p, NO_PARAMS)
      }
    }
    if (allow !== null) return { kind: 'method_not_allowed', allow: [...allow].sort() }
    return NOT_FOUND
  }
}

const NO_PARAMS: readonly string[] = Object.freeze([])
const NOT_FOUND = Object.freeze({ kind: 'not_found' as const })

function found<T>(route: CompiledRoute<T>, prefix: string, params: readonly string[]): RouteResult<T> {
  return { kind: 'found', target: route.target, index: route.index, prefix, params }
}

function addMethods(allow: Set<string> | null, methods: ReadonlySet<string>): Set<string> {
  const set = allow ?? new Set<string>()
  for (const m of methods) set.add(m)
  return set
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
