import type { EventEmitter } from 'node:events';
import type { ChangeEvent } from '../contract/change-event.js';

export type SourceState = 'idle' | 'connecting' | 'up' | 'down' | 'closed';

/** How a source came up. */
export interface UpInfo {
  /** True the first time the source is up. */
  first: boolean;
  /**
   * Why changes may have been missed since the source was last up, or null
   * when the source proves none were (a bus that resumed at last + 1). The
   * cache core flushes when this is non-null; on the first up there is
   * nothing cached, so it does not count a flush.
   */
  lost: string | null;
}

export interface ChangeSourceEvents {
  /** A validated change, in commit order. `receivedAt` is epoch ms with a fraction (performance clock), like the event's `ts`. */
  change: [event: ChangeEvent, receivedAt: number];
  /**
   * Input that is not a change we can read. `ours`: it says it is
   * memory-sync's (a newer or broken trigger), so the core flushes; another
   * program's payload on the channel is only counted.
   */
  invalid: [reason: string, sample: string, bytes: number, ours: boolean];
  /** Every change committed before now that was delivered has been emitted; caches may serve again. */
  up: [info: UpInfo];
  /** Changes may be going missing from now on: caches stop serving until `up`. */
  down: [reason: string];
  /** While up, the source learned that changes were missed (a gap in a bus stream, a sidecar flush): caches flush now. */
  lost: [reason: string];
  /** A barrier token reached the source, after every change committed before it was sent (relays forward it). */
  barrier: [token: string];
  /** A connect attempt failed with a transient error; another follows after a backoff. */
  retry: [attempt: number, error: Error];
}

/**
 * Where change events come from: PostgreSQL LISTEN, an embedded database, a
 * message bus. A source validates what it receives, delivers changes in
 * commit order, and says when it is up or down. It knows nothing about
 * caches: the cache core (src/cache/core.ts) decides what a change does.
 */
export interface ChangeSource extends EventEmitter<ChangeSourceEvents> {
  /** Short name for logs and metrics: "listen", "pglite", "nats", "redis". */
  readonly name: string;
  readonly state: SourceState;
  readonly isUp: boolean;
  /**
   * True when the source can replay what it missed while down (a bus that
   * resumes from a sequence); then the core keeps its contents while down
   * and flushes only if `up` reports `lost`. False (LISTEN): the core drops
   * everything as soon as the source goes down.
   */
  readonly resumable: boolean;
  /**
   * Resolves once the source is up. Transient failures are retried (with
   * `retry` events); a permanent one (wrong database, bad password) rejects
   * with a PermanentError naming what to fix.
   */
  start(): Promise<void>;
  /**
   * Barrier: resolves once every change committed before the call has been
   * emitted. Rejects (never crashes the process) when the source is down or
   * the barrier is not seen within `timeoutMs`.
   */
  sync(timeoutMs?: number): Promise<void>;
  close(): Promise<void>;
}
