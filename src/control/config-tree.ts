/*
 * The control API's `/config/...` paths on the configuration as given (the config file's
 * shape, not the validated one): read, replace or create, append, remove. Pure: plain JSON
 * values in, a new value out (the input is never changed, so a refused change leaves the
 * serving configuration as it was). Segments are object keys or array indices, as in NGINX
 * Unit's API: `/config/routes/2/wsgi/workers`.
 *
 * By hand rather than a JSON Pointer library (jsonpointer, fast-json-patch): those escape
 * `/` as RFC 6901's `~1` where a URL path has `%2F`, change the document in place, and do
 * not tell a missing parent (404) from an index past the end (400), which the API answers
 * differently; what is needed here is four small functions.
 */
import { GatehouseError } from '../core/errors.js'

export type Json = null | boolean | number | string | Json[] | { [key: string]: Json }

/** `/config/routes/2` -> ['routes', '2']; each segment percent-decoded (`%2F` is a `/` in a key). */
export function configPath(urlPath: string): string[] | null {
  if (urlPath !== '/config' && !urlPath.startsWith('/config/')) return null
  const segments = urlPath.slice('/config'.length).split('/').slice(1)
  // A trailing slash (`/config/routes/`) names the same thing as without it.
  if (segments.at(-1) === '') segments.pop()
  try {
    return segments.map((s) => decodeURIComponent(s))
  } catch {
    throw new GatehouseError('GH_ERR_CONTROL_REQUEST', `malformed percent-encoding in ${urlPath}`)
  }
}

const shown = (path: readonly string[]) => `/config${path.map((s) => `/${s}`).join('')}`

const isObject = (v: Json | undefined): v is { [key: string]: Json } =>
  typeof v === 'object' && v !== null && !Array.isArray(v)

/** An array index segment: digits only, no sign, no leading zero (`01` is not an index). */
function arrayIndex(segment: string): number | null {
  return /^(0|[1-9]\d*)$/.test(segment) ? Number(segment) : null
}

/** The value at `path`, or undefined. */
function lookup(root: Json, path: readonly string[]): Json | undefined {
  let node: Json | undefined = root
  for (const segment of path) {
    if (Array.isArray(node)) {
      const i = arrayIndex(segment)
      node = i === null ? undefined : node[i]
    } else if (isObject(node)) node = Object.hasOwn(node, segment) ? node[segment] : undefined
    else return undefined
  }
  return node
}

/** The value at `path`; GH_ERR_CONTROL_PATH when there is none. */
export function getAt(root: Json, path: readonly string[]): Json {
  const value = lookup(root, path)
  if (value === undefined) throw new GatehouseError('GH_ERR_CONTROL_PATH', shown(path))
  return value
}

/** A copy of `root` with the container at `parentPath` replaced by `edit(copy of it)`. */
function withParent(
  root: Json,
  parentPath: readonly string[],
  edit: (parent: Json[] | { [key: string]: Json }) => void,
): Json {
  const copy = structuredClone(root)
  const parent = lookup(copy, parentPath)
  if (!Array.isArray(parent) && !isObject(parent))
    throw new GatehouseError(
      'GH_ERR_CONTROL_PATH',
      parent === undefined ? shown(parentPath) : `${shown(parentPath)} is not an object or array`,
    )
  edit(parent)
  return copy
}

/** `PUT`: `value` at `path`, replacing what is there or creating it (its parent must exist). */
export function putAt(root: Json, path: readonly string[], value: Json): Json {
  if (path.length === 0) return value
  const key = path.at(-1)!
  return withParent(root, path.slice(0, -1), (parent) => {
    if (Array.isArray(parent)) {
      const i = arrayIndex(key)
      if (i === null || i > parent.length)
        throw new GatehouseError(
          'GH_ERR_CONTROL_REQUEST',
          `${shown(path)}: an index of ${shown(path.slice(0, -1))} is 0 to ${parent.length} (${parent.length} appends)`,
        )
      parent[i] = value
    } else parent[key] = value
  })
}

/** `POST`: `value` appended to the array at `path`; the new value and its index. */
export function appendAt(root: Json, path: readonly string[], value: Json): { root: Json; index: number } {
  const target = getAt(root, path)
  if (!Array.isArray(target))
    throw new GatehouseError('GH_ERR_CONTROL_REQUEST', `${shown(path)} is not an array: POST appends to one`)
  return { root: putAt(root, [...path, String(target.length)], value), index: target.length }
}

/** `DELETE`: the value at `path` removed (an array's later items move up); `/config` itself becomes `{}`. */
export function deleteAt(root: Json, path: readonly string[]): Json {
  getAt(root, path)
  if (path.length === 0) return {}
  const key = path.at(-1)!
  return withParent(root, path.slice(0, -1), (parent) => {
    if (Array.isArray(parent)) parent.splice(arrayIndex(key)!, 1)
    else delete parent[key]
  })
}
