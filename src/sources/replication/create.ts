import type { Logger } from 'pino';
import { MEMORY_SYNC_CAPTURE_TABLES, type CaptureTable } from '../../capture/replication.js';
import { ConfigError } from '../../contract/errors.js';
import { ReplicationSource } from './source.js';
import type { EventMapper } from './types.js';

/** The resolved options (src/client/options.ts) a replication source is built from. */
export interface ReplicationSettings {
  databaseUrl: string;
  logger: Logger;
  replication: { slot: string; publication: string; maxRetainedWalBytes: number; statusIntervalMs: number; tables?: CaptureTable[] | undefined; mapper?: EventMapper | undefined };
  listener: { paranoidIntervalMs: number; queryTimeoutMs: number; retryMinMs: number; retryMaxMs: number };
  /** "manual" for the relay (it confirms once the bus took a transaction). */
  confirm?: 'emitted' | 'manual';
}

/** One place that turns options into a ReplicationSource, for the client and the relay. */
export function createReplicationSource(s: ReplicationSettings): ReplicationSource {
  const r = s.replication;
  if (!r.mapper) {
    throw new ConfigError('options.replication.mapper', 'source "replication" needs the event mapper of the schema binding (issue 15); pass replication.mapper until it is built in');
  }
  return new ReplicationSource({
    databaseUrl: s.databaseUrl,
    logger: s.logger.child({ component: 'replication' }),
    mapper: r.mapper,
    slot: r.slot,
    publication: r.publication,
    tables: r.tables ?? MEMORY_SYNC_CAPTURE_TABLES,
    confirm: s.confirm ?? 'emitted',
    maxRetainedWalBytes: r.maxRetainedWalBytes,
    statusIntervalMs: r.statusIntervalMs,
    paranoidIntervalMs: s.listener.paranoidIntervalMs,
    queryTimeoutMs: s.listener.queryTimeoutMs,
    backoff: { minMs: s.listener.retryMinMs, maxMs: s.listener.retryMaxMs },
  });
}
