/** The sidecar's wire contract, shared by the server and createSidecarClient. */
import type { ErrorCode } from './errors.js';

export type { ErrorCode };

export interface ErrorBody {
  /** Human-readable; for validation errors "<field>: <reason>", as ValidationError.message. */
  error: string;
  /** Which error class the remote client throws; HTTP_STATUS (src/contract/errors.ts) gives the status. */
  code: ErrorCode;
  /** The offending input, for codes "validation" and "conflict" (e.g. "embedding", "personalityId", "name"). */
  field?: string;
  /** SQLSTATE, for codes "query" and "permanent". */
  sqlState?: string;
}

export const PATHS = {
  personality: '/v1/personalities/',
  /** `/v1/entities/:entity/:id` and `/v1/entities/:entity?<lookup>=<value>`. */
  entities: '/v1/entities/',
  /** `/v1/collections/:collection/search`. */
  collections: '/v1/collections/',
  /** What the sidecar declares, for the remote client's local cache. */
  schema: '/v1/schema',
  search: '/v1/memories/search',
  memories: '/v1/memories',
  memory: '/v1/memories/',
  sync: '/v1/sync',
  events: '/v1/events',
  health: '/healthz',
  ready: '/readyz',
  metrics: '/metrics',
} as const;

/** Server-sent event names on /v1/events. */
export type SidecarEventName = 'state' | 'invalidation' | 'down' | 'reconnect' | 'flush' | 'barrier';
