import type pg from 'pg';
import type { Logger } from 'pino';
import type { JobsConfig } from '../config.js';
import type { Binding } from '../schema/binding.js';
import type { Resolved } from '../schema/catalog.js';
import { deleteExpired, enforceCap, type BatchOptions } from '../store/retention.js';
import { guardVectorIndexes } from './index-guard.js';
import { JOB_LOCKS, Scheduler, withJobLock, type Connect, type ScheduledJob } from './jobs.js';
import type { SidecarMetrics } from './metrics.js';

export interface MaintenanceDeps {
  /** Each job run gets a connection of its own (never a pool connection). */
  connect: Connect;
  logger: Logger;
  metrics: SidecarMetrics;
  config: JobsConfig;
  /** The jobs run only on what the declaration names for them. */
  binding: Binding;
  resolved: Resolved;
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

/**
 * The maintenance jobs the declaration and configuration turn on: the
 * retention jobs only where the declaration names them (a bot's own schema
 * gets none unless declared), MEMORY_SYNC_HISTORY_TTL_DAYS and
 * MEMORY_SYNC_MEMORY_CAP override their numbers (0 turns one off).
 */
export function maintenanceJobs(deps: MaintenanceDeps): ScheduledJob[] {
  const { config, binding } = deps;
  const jobs: ScheduledJob[] = [];
  if (binding.collections.size) {
    jobs.push({
      name: 'index-guard',
      intervalMs: config.indexGuardIntervalMs,
      run: locked(deps, 'index-guard', JOB_LOCKS.indexGuard, async (db) => {
        const outcome = await guardVectorIndexes(db, binding, deps.resolved, deps.logger);
        if (outcome === 'recreated') deps.metrics.indexRebuilt();
        return { outcome };
      }),
    });
  }
  // History and the cap run one after the other: one extra connection at a time.
  const retention: Array<(signal: AbortSignal) => Promise<void>> = [];
  const history = binding.jobs.historyTtl;
  const days = config.historyTtlDays ?? history?.days ?? 0;
  if (history && days > 0) {
    retention.push(
      locked(deps, 'history-ttl', JOB_LOCKS.history, async (db, batch) => ({
        ...(await deleteExpired(db, binding, history, { ...batch, days })),
        ttlDays: days,
      })),
    );
  }
  const cap = binding.jobs.memoryCap;
  const keep = config.memoryCap ?? cap?.keep ?? 0;
  if (cap && keep > 0) {
    retention.push(
      locked(deps, 'memory-cap', JOB_LOCKS.memoryCap, async (db, batch) => ({
        ...(await enforceCap(db, binding, cap, { ...batch, keep })),
        cap: keep,
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
