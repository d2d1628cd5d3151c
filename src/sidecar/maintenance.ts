import type pg from 'pg';
import type { Logger } from 'pino';
import type { JobsConfig } from '../config.js';
import { guardVectorIndex } from './index-guard.js';
import { JOB_LOCKS, Scheduler, withJobLock, type Connect, type ScheduledJob } from './jobs.js';
import type { SidecarMetrics } from './metrics.js';
import { deleteExpiredHistory, enforceMemoryCap, type BatchOptions } from '../store/retention.js';

export interface MaintenanceDeps {
  /** Each job run gets a connection of its own (never a pool connection). */
  connect: Connect;
  logger: Logger;
  metrics: SidecarMetrics;
  config: JobsConfig;
}

/** Wraps a locked job with its log lines and metrics; never throws. */
function locked(
  deps: MaintenanceDeps,
  name: string,
  key: number,
  work: (db: pg.ClientBase, batch: BatchOptions) => Promise<Record<string, unknown>>,
): (signal: AbortSignal) => Promise<void> {
  return async (signal) => {
    const started = performance.now();
    // Deleted rows are counted per batch: a run that fails half-way still reports them.
    const batch: BatchOptions = {
      batchSize: deps.config.batchSize,
      signal,
      onBatch: (n) => deps.metrics.deletedRows(name, n),
    };
    try {
      const r = await withJobLock(deps.connect, key, (db) => work(db, batch), signal);
      if (!r.ran) {
        deps.metrics.job(name, 'skipped');
        deps.logger.debug({ job: name }, 'job skipped: another instance holds its lock');
        return;
      }
      deps.metrics.job(name, 'ran');
      deps.logger.info({ job: name, ms: Math.round(performance.now() - started), ...r.value }, 'job done');
    } catch (err) {
      // Logged here, not thrown: one failing job must not stop the next one.
      if (signal.aborted) {
        deps.logger.info({ job: name }, 'job cancelled by shutdown');
        return;
      }
      deps.metrics.job(name, 'failed');
      deps.logger.error({ job: name, err }, 'job failed');
    }
  };
}

/** The maintenance jobs the configuration turns on. */
export function maintenanceJobs(deps: MaintenanceDeps): ScheduledJob[] {
  const { config } = deps;
  const jobs: ScheduledJob[] = [
    {
      name: 'index-guard',
      intervalMs: config.indexGuardIntervalMs,
      run: locked(deps, 'index-guard', JOB_LOCKS.indexGuard, async (db) => {
        const outcome = await guardVectorIndex(db, deps.logger);
        if (outcome === 'recreated') deps.metrics.indexRebuilt();
        return { outcome };
      }),
    },
  ];
  // History and the cap run one after the other: one extra connection at a time.
  const retention: Array<(signal: AbortSignal) => Promise<void>> = [];
  if (config.historyTtlDays > 0) {
    retention.push(
      locked(deps, 'history-ttl', JOB_LOCKS.history, async (db, batch) => ({
        ...(await deleteExpiredHistory(db, { ...batch, ttlDays: config.historyTtlDays })),
        ttlDays: config.historyTtlDays,
      })),
    );
  }
  if (config.memoryCap > 0) {
    retention.push(
      locked(deps, 'memory-cap', JOB_LOCKS.memoryCap, async (db, batch) => ({
        ...(await enforceMemoryCap(db, { ...batch, cap: config.memoryCap })),
        cap: config.memoryCap,
      })),
    );
  }
  if (retention.length) {
    jobs.push({
      name: 'retention',
      intervalMs: config.intervalMs,
      run: async (signal) => {
        for (const run of retention) if (!signal.aborted) await run(signal);
      },
    });
  }
  return jobs;
}

/** Starts every job (first run now); stop the returned scheduler on shutdown. */
export function startMaintenance(deps: MaintenanceDeps): Scheduler {
  const scheduler = new Scheduler(deps.logger);
  for (const job of maintenanceJobs(deps)) scheduler.add(job);
  return scheduler;
}
