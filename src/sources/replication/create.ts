import type { Logger } from 'pino';
import type { CaptureTable } from '../../capture/replication.js';
import { ReplicationSource } from './source.js';
import type { EventMapper } from './types.js';

/** The resolved options (src/client/options.ts) a replication source is built from. */
export interface ReplicationSettings {
  databaseUrl: string;
  logger: Logger;
  replication: { slot: string; publication: string; maxRetainedWalBytes: number; statusIntervalMs: number };
  listener: { paranoidIntervalMs: number; queryTimeoutMs: number; retryMinMs: number; retryMaxMs: number };
  /** The binding's (src/capture/publication.ts, ./mapper.ts): what is published and how it becomes change events. */
  tables: readonly CaptureTable[];
  mapper: EventMapper;
  /** "manual" for the relay (it confirms once the bus took a transaction). */
  confirm?: 'emitted' | 'manual';
}

/** One place that turns options into a ReplicationSource, for the client and the relay. */
export function createReplicationSource(s: ReplicationSettings): ReplicationSource {
  const r = s.replication;
  return new ReplicationSource({
    databaseUrl: s.databaseUrl,
    logger: s.logger.child({ component: 'replication' }),
    mapper: s.mapper,
    slot: r.slot,
    publication: r.publication,
    tables: s.tables,
    confirm: s.confirm ?? 'emitted',
    maxRetainedWalBytes: r.maxRetainedWalBytes,
    statusIntervalMs: r.statusIntervalMs,
    paranoidIntervalMs: s.listener.paranoidIntervalMs,
    queryTimeoutMs: s.listener.queryTimeoutMs,
    backoff: { minMs: s.listener.retryMinMs, maxMs: s.listener.retryMaxMs },
  });
}
