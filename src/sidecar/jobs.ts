import type pg from 'pg';
import type { Logger } from 'pino';

/**
 * Advisory-lock keys, two-int form: (namespace, job). The two-int key space
 * never collides with migrate's single bigint lock (MIGRATE_LOCK_KEY).
 */
export const JOB_LOCK_NAMESPACE = 0x6d656d73; // 'mems'
export const JOB_LOCKS = { history: 1, memoryCap: 2, indexGuard: 3 } as const;

export type Locked<T> = { ran: true; value: T } | { ran: false };

/**
 * Runs `fn` on one dedicated pooled client that holds a session advisory lock
 * for the whole job, so that among many sidecars exactly one runs it. Returns
 * { ran: false } at once when another session holds the lock. An abort
 * cancels the statement in flight (pg_cancel_backend) so shutdown never waits
 * for a long index build.
 */
export async function withJobLock<T>(
  pool: pg.Pool,
  key: number,
  fn: (db: pg.PoolClient) => Promise<T>,
  signal?: AbortSignal,
): Promise<Locked<T>> {
  const db = await pool.connect();
  // While checked out, pg-pool does not handle the client's 'error' event: a
  // dropped connection during a job must not crash the process.
  const onError = (err: Error) => (destroy = err);
  db.on('error', onError);
  // A client whose unlock failed still holds the lock: destroy it, and its
  // session (with the lock) ends, instead of returning it to the pool.
  let destroy: Error | undefined;
  try {
    const r = await db
      .query<{ locked: boolean; pid: number }>('SELECT pg_try_advisory_lock($1, $2) AS locked, pg_backend_pid() AS pid', [
        JOB_LOCK_NAMESPACE,
        key,
      ])
      .catch((err: Error) => {
        destroy = err;
        throw err;
      });
    const row = r.rows[0];
    if (!row?.locked) return { ran: false };
    const cancel = () => void pool.query('SELECT pg_cancel_backend($1)', [row.pid]).catch(() => {});
    signal?.addEventListener('abort', cancel, { once: true });
    try {
      return { ran: true, value: await fn(db) };
    } finally {
      signal?.removeEventListener('abort', cancel);
      await db.query('SELECT pg_advisory_unlock($1, $2)', [JOB_LOCK_NAMESPACE, key]).catch((err: Error) => {
        destroy = err;
      });
    }
  } finally {
    db.off('error', onError);
    db.release(destroy);
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
      this.logger.error({ job: job.name, err: { message: (err as Error).message, code: (err as { code?: string }).code } }, 'job failed');
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
