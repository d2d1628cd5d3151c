import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { InvalidationInfo, MemorySync, MemorySyncStats } from '../client/memory-sync.js';
import type { BusSourceStats } from '../sources/bus-source.js';
import type { ReplicationStats } from '../sources/replication/source.js';

const PREFIX = 'memory_sync_';

/** Scrape-time query; a dead pool must not hold the scrape for the pool's 30 s timeout. */
const QUEUE_QUERY_TIMEOUT_MS = 2_000;

/**
 * Prometheus metrics for one sidecar. Engine counters are read from
 * client.stats() at scrape time; per-event series are fed by the lifecycle.
 */
export class SidecarMetrics {
  readonly registry = new Registry();
  private readonly invalidations: Counter<'model' | 'operation' | 'action'>;
  private readonly invalid: Counter;
  private readonly reconnects: Counter;
  private readonly lag: Histogram;
  private readonly requests: Histogram<'method' | 'route' | 'status'>;
  private readonly jobRuns: Counter<'job' | 'outcome'>;
  private readonly jobRows: Counter<'job'>;
  private readonly indexRebuilds: Counter;

  constructor(client: MemorySync) {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry, prefix: PREFIX });

    // Counters that mirror the engine's own monotonic totals.
    const fromStats = (name: string, help: string, pick: (s: MemorySyncStats) => number) =>
      new Counter({
        name: PREFIX + name,
        help,
        registers,
        collect() {
          this.reset();
          this.inc(pick(client.stats()));
        },
      });
    fromStats('cache_hits_total', 'Entity lookups answered from the cache (all entities).', (s) => s.hits);
    fromStats('cache_misses_total', 'Entity lookups that read the database (all entities).', (s) => s.misses);
    fromStats('foreign_notifications_total', "Other programs' payloads on memory-sync's channel (ignored, never flushed on).", (s) => s.foreignNotifications);
    const perEntity = (name: string, help: string, pick: (e: MemorySyncStats['entities'][string]) => number) =>
      new Counter({
        name: PREFIX + name,
        help,
        labelNames: ['entity'],
        registers,
        collect() {
          this.reset();
          for (const [entity, e] of Object.entries(client.stats().entities)) this.inc({ entity }, pick(e));
        },
      });
    perEntity('entity_hits_total', 'Lookups answered from the cache, by entity.', (e) => e.hits);
    perEntity('entity_misses_total', 'Lookups that read the database, by entity.', (e) => e.misses);
    perEntity('entity_invalidated_total', 'Cached values dropped because a change named one of their rows, by entity.', (e) => e.invalidated);
    new Counter({
      name: PREFIX + 'wrong_dimension_rows_total',
      help: "Stored vectors left out of hot sets because their dimension is not the collection's, by collection.",
      labelNames: ['collection'],
      registers,
      collect() {
        this.reset();
        for (const [collection, c] of Object.entries(client.stats().collections)) this.inc({ collection }, c.wrongDimension);
      },
    });
    fromStats('cache_evictions_total', 'Entries evicted for space (personalities and hot sets).', (s) => s.evictions);
    fromStats('cache_flushes_total', 'Whole-cache flushes (reconnects, TRUNCATE, table-scope events).', (s) => s.flushes);

    this.invalidations = new Counter({
      name: PREFIX + 'invalidations_total',
      help: 'Change events applied, by Prisma model, operation and action taken.',
      labelNames: ['model', 'operation', 'action'],
      registers,
    });
    this.invalid = new Counter({
      name: PREFIX + 'invalid_notifications_total',
      help: 'Notifications ignored because their payload broke the contract.',
      registers,
    });
    this.reconnects = new Counter({
      name: PREFIX + 'listener_reconnects_total',
      help: 'Times the change source came back after being down (LISTEN reconnects, slot and bus resumes, with or without a flush).',
      registers,
    });
    new Gauge({
      name: PREFIX + 'listener_up',
      help: '1 while LISTEN is confirmed, else 0 (cached data is not served).',
      registers,
      collect() {
        this.set(client.sourceState === 'up' ? 1 : 0);
      },
    });
    this.lag = new Histogram({
      name: PREFIX + 'invalidation_lag_seconds',
      help: 'Time from pg_notify (payload ts) to the notification being applied.',
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers,
    });
    new Gauge({
      name: PREFIX + 'hot_set_bytes',
      help: 'Bytes held by hot memory sets.',
      registers,
      collect() {
        this.set(client.stats().hotSetBytes);
      },
    });
    new Gauge({
      name: PREFIX + 'hot_set_vectors',
      help: 'Vectors held by hot memory sets.',
      registers,
      collect() {
        this.set(client.stats().hotVectors);
      },
    });
    new Gauge({
      name: PREFIX + 'notification_queue_usage',
      help: 'pg_notification_queue_usage(): fraction of the server NOTIFY queue in use (NaN when the query failed).',
      registers,
      async collect() {
        // query_timeout starts only once a connection is free: bound the wait for one too.
        let timer: NodeJS.Timeout | undefined;
        const late = new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new Error('no pool connection in time')), QUEUE_QUERY_TIMEOUT_MS);
        });
        try {
          const query = client.database.query<{ usage: number }>('SELECT pg_notification_queue_usage() AS usage');
          query.catch(() => {}); // may settle after the race is lost
          const r = await Promise.race([query, late]);
          this.set(Number(r.rows[0]?.usage ?? Number.NaN));
        } catch {
          this.set(Number.NaN);
        } finally {
          clearTimeout(timer);
        }
      },
    });
    // Per change source: which one, and for a bus, how far it got and how it resumed.
    new Gauge({
      name: PREFIX + 'source_info',
      help: 'The change source in use (label source: listen, pglite, nats, redis); always 1.',
      labelNames: ['source'],
      registers,
      collect() {
        this.reset();
        this.set({ source: client.stats().source }, 1);
      },
    });
    const busStat = (name: string, help: string, pick: (s: BusSourceStats) => number, type: 'gauge' | 'counter') => {
      const collect = function (this: Gauge | Counter) {
        const s = client.busStats;
        if (!s) return;
        this.reset();
        if (this instanceof Gauge) this.set(pick(s));
        else this.inc(pick(s));
      };
      return type === 'gauge' ? new Gauge({ name: PREFIX + name, help, registers, collect }) : new Counter({ name: PREFIX + name, help, registers, collect });
    };
    busStat('source_sequence_applied', 'Last bus stream sequence applied (fleet mode).', (s) => s.lastSequence, 'gauge');
    busStat('source_gap_flushes_total', 'Flushes because the bus subscriber could not prove continuity (trimmed, recreated or lost stream, relay gap).', (s) => s.gapFlushes, 'counter');
    busStat('source_resumes_total', 'Reconnects to the bus that resumed at last + 1: nothing lost, no flush.', (s) => s.resumes, 'counter');
    busStat('source_bus_lag_seconds', 'Commit to this process through the bus, for the last change (payload ts to receipt).', (s) => (s.lagMs ?? 0) / 1000, 'gauge');
    // The replication source (source "replication"): how far behind its slot is, and what it keeps on the server.
    const replicationStat = (name: string, help: string, pick: (s: ReplicationStats) => number | null, type: 'gauge' | 'counter') => {
      const collect = function (this: Gauge | Counter) {
        const s = client.replicationStats;
        if (!s) return;
        this.reset();
        const v = pick(s);
        if (v === null) return;
        if (this instanceof Gauge) this.set(v);
        else this.inc(v);
      };
      return type === 'gauge' ? new Gauge({ name: PREFIX + name, help, registers, collect }) : new Counter({ name: PREFIX + name, help, registers, collect });
    };
    replicationStat('replication_slot_lag_bytes', 'WAL written on the server that the replication slot has not confirmed yet, bytes.', (s) => s.lagBytes, 'gauge');
    replicationStat('replication_slot_lag_seconds', 'Commit to receipt of the last transaction read from the slot; 0 once the stream is caught up.', (s) => (s.lagMs === null ? null : Math.max(0, s.lagMs) / 1000), 'gauge');
    replicationStat('replication_slot_retained_wal_bytes', 'WAL the replication slot keeps on the server (bounded by maxRetainedWalBytes).', (s) => s.retainedBytes, 'gauge');
    replicationStat('replication_resumes_total', 'Reconnects that resumed from the slot with nothing lost: no flush.', (s) => s.resumes, 'counter');
    replicationStat('replication_losses_total', 'Times the slot could not prove continuity (created, invalidated, dropped past the WAL bound): caches flushed.', (s) => s.losses, 'counter');
    this.requests = new Histogram({
      name: PREFIX + 'http_request_duration_seconds',
      help: 'HTTP request duration, by method, route and status.',
      labelNames: ['method', 'route', 'status'],
      buckets: [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
      registers,
    });
    this.jobRuns = new Counter({
      name: PREFIX + 'job_runs_total',
      help: 'Maintenance job runs, by job and outcome (ran, skipped: another instance holds the lock, failed).',
      labelNames: ['job', 'outcome'],
      registers,
    });
    this.jobRows = new Counter({
      name: PREFIX + 'job_deleted_rows_total',
      help: 'Rows deleted by retention jobs.',
      labelNames: ['job'],
      registers,
    });
    this.indexRebuilds = new Counter({
      name: PREFIX + 'vector_index_rebuilds_total',
      help: 'Times the index guard recreated a collection\'s vector index.',
      registers,
    });
  }

  invalidation({ event, action, lagMs }: InvalidationInfo): void {
    this.invalidations.inc({ model: event.model, operation: event.op, action });
    this.lag.observe(Math.max(0, lagMs) / 1000);
  }

  invalidNotification(): void {
    this.invalid.inc();
  }

  reconnect(): void {
    this.reconnects.inc();
  }

  request(method: string, route: string, status: number, seconds: number): void {
    this.requests.observe({ method, route, status: String(status) }, seconds);
  }

  job(job: string, outcome: 'ran' | 'skipped' | 'failed'): void {
    this.jobRuns.inc({ job, outcome });
  }

  /** Counted per batch, so a run that fails half-way still reports what it deleted. */
  deletedRows(job: string, rows: number): void {
    if (rows > 0) this.jobRows.inc({ job }, rows);
  }

  indexRebuilt(): void {
    this.indexRebuilds.inc();
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  render(): Promise<string> {
    return this.registry.metrics();
  }
}
