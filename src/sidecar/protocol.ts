/** The sidecar's wire contract, shared by the server and createSidecarClient. */

/** `code` says which error class the remote client throws. */
export type ErrorCode = 'validation' | 'not_found' | 'unavailable' | 'query' | 'no_route' | 'internal';

export interface ErrorBody {
  /** Human-readable; for validation errors "<field>: <message>", as ValidationError.message. */
  error: string;
  code: ErrorCode;
  /** The offending input, for code "validation" (e.g. "embedding", "personalityId", "id"). */
  field?: string;
  /** SQLSTATE, for code "query". */
  sqlState?: string;
}

export const PATHS = {
  personality: '/v1/personalities/',
  search: '/v1/memories/search',
  memories: '/v1/memories',
  memory: '/v1/memories/',
  events: '/v1/events',
  health: '/healthz',
  ready: '/readyz',
  metrics: '/metrics',
} as const;

/** Server-sent event names on /v1/events. */
export type SidecarEventName = 'state' | 'invalidation' | 'down' | 'reconnect' | 'flush';
