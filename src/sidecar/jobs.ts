import pg from 'pg';
import type { Logger } from 'pino';
import type { Queryable } from '../backend/queryable.js';

/**
 * Advisory-lock keys, two-int form: (namespace, job). The two-int key space
 * never collides with migrate's single bigint lock (MIGRATE_LOCK_KEY).
 */
export const JOB_LOCK_NAMESPACE = 0x6d656d73; // 'mems'
export const JOB_LOCKS = { history: 1, memoryCap: 2, indexGuard: 3 } as const;

export type Locked<T> = { ran: true; value: T } | { ran: false };

/** Opens a connection of the job's own: jobs never hold (or wait for) pool connections. */
export type Connect = () => Promise<pg.Client>;

/** A connected client whose 'error' event is handled (a dropped socket must not crash the process). */
export function dedicatedConnection(databaseUrl: string, applicationName = 'memory-sync-jobs'): Connect {
  return async () => {
    const client = new pg.Client({ connectionString: databaseUrl, application_name: applicationName, connectionTimeoutMillis: 5_000 });
    client.on('error', () => {}); // surfaces as the failure of the query in flight
    await client.connect();
    return client;
  };
}

/**
 * The embedded database as a job connection: one in-process session, so
 * the advisory lock is always ours and there is nothing to close.
 */
export function embeddedConnection(db: Queryable): Connect {
  const query = (q: string | { text: string; values?: unknown[] }, values?: unknown[]) =>
    typeof q === 'string' ? db.query(q, values) : db.query(q.text, q.values);
  return async () => ({ query, end: async () => {} }) as unknown as pg.Client;
}

/**
 * Runs `fn` on a connection of its own that holds a session advisory lock
 * for the whole job, so that among many sidecars exactly one runs it. Returns
 * { ran: false } at once when another session holds the lock. The connection
 * is closed afterwards, which also ends the lock whatever happened. An abort
 * cancels the statement in flight (pg_cancel_backend, from another
 * connection) so shutdown never waits for a long index build.
 */
export async function withJobLock<T>(
  connect: Connect,
  key: number,
  fn: (db: pg.ClientBase) => Promise<T>,
  signal?: AbortSignal,
): Promise<Locked<T>> {
  if (signal?.aborted) return { ran: false };
  const db = await connect();
  try {
    const r = await db.query<{ locked: boolean; pid: number }>(
      'SELECT pg_try_advisory_lock($1, $2) AS locked, pg_backend_pid() AS pid',
      [JOB_LOCK_NAMESPACE, key],
    );
    const row = r.rows[0];
    if (!row?.locked) return { ran: false };
    const cancel = () => void cancelBackend(connect, row.pid);
    signal?.addEventListener('abort', cancel, { once: true });
    if (signal?.aborted) cancel(); // aborted while the lock was being taken
    try {
      return { ran: true, value: await fn(db) };
    } finally {
      signal?.removeEventListener('abort', cancel);
    }
  } finally {
    // Ending the session releases its advisory locks, even if an unlock would fail.
    await db.end().catch(() => {});
  }
}

async function cancelBackend(connect: Connect, pid: number): Promise<void> {
  try {
    const c = await connect();
    try {
      await c.query('SELECT pg_cancel_backend($1)', [pid]);
    } finally {
      await c.end().catch(() => {});
    }
  } catch {
    // Nothing to cancel through: the job's own timeout still bounds it.
  }
}

export interface ScheduledJob {
  name: string;
  /** 0: run once at start-up only. */
  intervalMs: number;
  run(signal: AbortSignal): Promise<void>;
}

/**
 * Runs each job at start-up, then `intervalMs` after the previous run ended
 * (never overlapping itself). Timers are unref'd; stop() aborts and waits.
 */
export class Scheduler {
  private readonly abort = new AbortController();
  private readonly timers = new Set<NodeJS.Timeout>();
  private readonly running = new Set<Promise<void>>();

  constructor(private readonly logger: Logger) {}

  add(job: ScheduledJob, delayMs = 0): void {
    if (this.abort.signal.aborted) return;
    const timer = setTimeout(() => {
      this.timers.delete(timer);
      const run = this.runOnce(job).finally(() => {
        this.running.delete(run);
        if (job.intervalMs > 0) this.add(job, job.intervalMs);
      });
      this.running.add(run);
    }, delayMs);
    timer.unref();
    this.timers.add(timer);
  }

  private async runOnce(job: ScheduledJob): Promise<void> {
    try {
      await job.run(this.abort.signal);
    } catch (err) {
      if (this.abort.signal.aborted) return;
      this.logger.error({ job: job.name, err }, 'job failed');
    }
  }

  /** Stops the timers, cancels jobs in flight and waits for them. */
  async stop(): Promise<void> {
    this.abort.abort();
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    await Promise.all([...this.running]);
  }
}
