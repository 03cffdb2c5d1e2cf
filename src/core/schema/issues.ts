/*
 * Zod issues as the one-line problems Gatehouse reports (`routes[2].static.root: ...`), for
 * the config file, the CLI and the library listeners alike.
 */
import type { z } from 'zod'

/** `routes[2].static.root` from a zod issue path. */
export function formatPath(path: readonly PropertyKey[]): string {
  let out = ''
  for (const part of path) {
    if (typeof part === 'number') out += `[${part}]`
    else out += out === '' ? String(part) : `.${String(part)}`
  }
  return out || '(top level)'
}

/** One `path: message` line per problem, duplicates removed. */
export function formatIssues(issues: readonly z.core.$ZodIssue[]): string[] {
  const lines: string[] = []
  for (const issue of issues) {
    if (issue.code === 'invalid_union' && issue.errors.length > 0) {
      // Report the branch that got furthest rather than zod's generic "Invalid input".
      const best = [...issue.errors].sort((a, b) => depth(b) - depth(a))[0]!
      lines.push(...formatIssues(best.map((i) => ({ ...i, path: [...issue.path, ...i.path] }))))
      continue
    }
    lines.push(`${formatPath(issue.path)}: ${issue.message}`)
  }
  return [...new Set(lines)]
}

function depth(errors: readonly z.core.$ZodIssue[]): number {
  return Math.max(0, ...errors.map((e) => e.path.length + (e.code === 'invalid_type' ? 0 : 1)))
}
