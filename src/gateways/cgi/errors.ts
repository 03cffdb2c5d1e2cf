/*
 * What a refused CGI header block means at the CGI gateway (docs/errors.md, "How errors are
 * made"): cgi-vars/response.ts returns a ProtocolError of protocol 'cgi'; the exchange that
 * owns the script makes it GH_ERR_CGI_RESPONSE (502), naming the script and how it exited.
 */
import type { CgiResponseErrorCode } from '../../cgi-vars/response.js'
import { GatehouseError, isProtocolError } from '../../core/errors.js'

/**
 * A problem with a script's header block: the parser's CgiResponseError, or one the exchange
 * finds itself (an nph- script with no output, a head the relay refused).
 */
export interface HeadProblem {
  code: CgiResponseErrorCode
  message: string
  line?: number
}

/** GH_ERR_CGI_RESPONSE for a header block; `script` names the script and how it exited. */
export function responseError(problem: HeadProblem, script: string): GatehouseError {
  const line = problem.line === undefined ? '' : ` at line ${problem.line}`
  return new GatehouseError(
    'GH_ERR_CGI_RESPONSE',
    `${script}: ${problem.code}: ${problem.message}${line}`,
    isProtocolError(problem, 'cgi') ? { cause: problem } : undefined,
  )
}
