import pg from 'pg';
import type { Logger } from 'pino';

export interface PoolOptions {
  databaseUrl: string;
  /** Connections; the seed's Railway budget is 20 per service at most. */
  max: number;
  /** ivfflat lists probed first; iterative scans add more until LIMIT is met. */
  ivfflatProbes: number;
  queryTimeoutMs: number;
  logger: Logger;
  applicationName?: string;
}

/**
 * The shared pool for lookups, writes and pgvector searches (Prisma uses it
 * too, through @prisma/adapter-pg). Never used for LISTEN.
 */
export function createPool(options: PoolOptions): pg.Pool {
  const pool = new pg.Pool({
    connectionString: options.databaseUrl,
    max: options.max,
    idleTimeoutMillis: 30_000,
    connectionTimeoutMillis: 5_000,
    keepAlive: true,
    query_timeout: options.queryTimeoutMs,
    application_name: options.applicationName ?? 'memory-sync',
    // Iterative scans keep probing until LIMIT rows pass the personality
    // filter (pgvector >= 0.8); without them ivfflat may return fewer rows.
    options: `-c ivfflat.iterative_scan=relaxed_order -c hnsw.iterative_scan=relaxed_order -c ivfflat.probes=${options.ivfflatProbes}`,
  });
  // An idle client killed by the server (restart, pg_terminate_backend) is
  // reported here; unhandled, it would crash the process.
  pool.on('error', (err) => {
    options.logger.warn({ err }, 'idle pool connection lost');
  });
  return pool;
}
