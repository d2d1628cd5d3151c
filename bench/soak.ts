/**
 * Soak: the real sidecar (`memory-sync start`, LOG_LEVEL=info) under a NOTIFY
 * flood long enough to see a slow leak (issue 12, "Also"). RSS and heap are
 * sampled after every `SOAK_SAMPLE_EVERY` applied notifications, each time
 * after a quiet period and a full GC, and the growth per 100k is fitted by
 * least squares over the samples after warm-up.
 *
 *   npx tsx bench/soak.ts
 *   SOAK_NOTIFICATIONS=1000000 SOAK_SAMPLE_EVERY=100000 SOAK_MAX_SECONDS=300 npx tsx bench/soak.ts
 *   SOAK_NOTIFICATIONS=4000000 SOAK_SAMPLE_EVERY=200000 SOAK_WARMUP=1000000 npx tsx bench/soak.ts   (a verdict)
 *
 * Other knobs: SOAK_CONNECTIONS, SOAK_BATCH, SOAK_QUIET_MS, SOAK_REQUEST_EVERY_MS and
 * SOAK_SEARCH_EVERY_MS (0 turns a loop off), SOAK_GC=0, SOAK_HEAP_SNAPSHOT_DIR (snapshots
 * after warm-up and at the end; the first one grows RSS by ~100 MB, so the fit starts after it).
 *
 * What runs: a database of its own (migrated, dropped at the end), 20
 * personalities (3 "hot", 500 memories each); the bench process keeps them
 * cached with GET /v1/personalities/:id and POST /v1/memories/search every
 * few ms, while 3 connections send batches of valid v2 payloads (every
 * model, op and scope, rows events naming the cached personalities and real
 * memory ids) with `SELECT pg_notify(...) FROM generate_series(...)`. Each
 * batch is followed by POST /v1/sync on the same sidecar, so the flood runs
 * exactly as fast as the sidecar applies it; pg_notification_queue_usage()
 * is watched too and the flood waits while it is above `maxQueueUsage` (the
 * queue is shared by the whole cluster). Once a second a probe writes from
 * outside (personality UPDATE, memory INSERT and DELETE), syncs and reads
 * back through the sidecar: a stale read is counted, never tolerated.
 *
 * Baseline, same run: a plain pg LISTEN client with JSON.parse only, fed by
 * the same generator and pacing before the sidecar starts.
 *
 * `soak(options)` returns the samples and figures, for `npm run bench`
 * (a short version: `soak({ notifications: 200_000, sampleEvery: 50_000 })`).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { EventEmitter, once } from 'node:events';
import { createWriteStream, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { pathToFileURL } from 'node:url';
import pg from 'pg';
import { Pool as HttpPool, WebSocket } from 'undici';
import { z } from 'zod';
import { migrate } from '../src/migrations/migrate.js';
import { EMBEDDING_DIMENSION } from '../src/embedding.js';
import { DEFAULT_MIGRATIONS_DIR, DEFAULT_SCHEMA_PATH, PACKAGE_ROOT } from '../src/paths.js';
import type { Figure } from './figure.js';

export interface SoakOptions {
  /**
   * Server the soak creates its database on (dropped at the end).
   * @defaultValue BENCH_DATABASE_URL, else TEST_DATABASE_URL, else postgresql://postgres@127.0.0.1:5432/postgres — the local test server.
   */
  adminUrl?: string;
  /**
   * Flood notifications to send.
   * @defaultValue 1,000,000 — at ~10 samples, a leak of ~10 bytes per notification (1 MB per 100k) stands out of RSS noise.
   */
  notifications?: number;
  /**
   * A sample (quiet period, GC, RSS and heap) after every this many applied.
   * @defaultValue 100,000 — the unit the leak is reported in.
   */
  sampleEvery?: number;
  /**
   * Connections sending the flood, each paced by its own POST /v1/sync.
   * @defaultValue 3 — one is always committing while another waits for its barrier.
   */
  connections?: number;
  /**
   * Notifications per statement (one transaction).
   * @defaultValue 1000 — large enough that SQL round trips do not set the pace, small enough that the backlog stays a few MB.
   */
  batch?: number;
  /**
   * Quiet period before each sample: no notifications, no requests.
   * @defaultValue 2000 — lets hot-set refreshes and the log's aggregation window finish.
   */
  quietMs?: number;
  /**
   * The flood waits while pg_notification_queue_usage() is above this.
   * @defaultValue 0.01 — 1% of the server-wide queue (~80 MB): other listeners on the cluster must never see it fill.
   */
  maxQueueUsage?: number;
  /**
   * Pause between personality GETs (sequential); 0 turns the loop off.
   * @defaultValue 2 — "every few ms", as a busy bot would.
   */
  requestEveryMs?: number;
  /**
   * Pause between memory searches (sequential); 0 turns the loop off.
   * @defaultValue 10 — a dirty hot set sends searches to pgvector; more would load the shared 2-core machine.
   */
  searchEveryMs?: number;
  /**
   * Pause between stale-read probes (write from outside, sync, read back).
   * @defaultValue 1000
   */
  probeEveryMs?: number;
  /**
   * Flood time after which the soak stops at the next sample, whatever `notifications` says.
   * @defaultValue Infinity — SOAK_MAX_SECONDS bounds a run on a busy machine.
   */
  maxSeconds?: number;
  /**
   * Force a full GC (over the inspector protocol) before each sample.
   * @defaultValue true — without it, heap and RSS show the collector's schedule, not what is retained.
   */
  gc?: boolean;
  /**
   * Notifications applied before the slopes' fit starts (rounded up to a sample).
   * @defaultValue max(2 × sampleEvery, 20% of notifications) — RSS climbs to a plateau first (JIT code, allocator arenas); on a 2-core machine that took ~1M notifications, so a leak verdict wants 4M with SOAK_WARMUP=1000000.
   */
  warmup?: number;
  /**
   * Notifications in the raw LISTEN baseline; 0 skips it.
   * @defaultValue min(100,000, notifications / 5)
   */
  baseline?: number;
  /**
   * Heap snapshots after the first post-warm-up sample and the last, written here (for leak hunting).
   * @defaultValue undefined — none: a snapshot of a 100 MB heap takes seconds.
   */
  heapSnapshotDir?: string | undefined;
  /** Progress lines. @defaultValue console.error */
  log?: (line: string) => void;
}

export interface SoakSample {
  /** memory_sync_invalidations_total, summed: notifications the sidecar applied. */
  applied: number;
  /** memory_sync_process_resident_memory_bytes, MB. */
  rssMb: number;
  /** VmRSS of the child from /proc, MB (cross-check). */
  procRssMb: number;
  /** V8 heap used after the GC, MB. */
  heapMb: number;
  /** nodejs_external_memory_bytes (typed arrays, native buffers), MB. */
  externalMb: number;
  /** memory_sync_hot_set_vectors: the hot sets are re-warmed before each sample, so samples compare like with like. */
  hotVectors: number;
  /** Flood seconds so far (quiet periods excluded). */
  floodSeconds: number;
  /** Notifications applied per flood second since the previous sample. */
  rate: number;
}

export interface SoakResult {
  samples: SoakSample[];
  /** Least-squares slopes over the samples after warm-up, MB per 100k notifications. */
  rssMbPer100k: number;
  heapMbPer100k: number;
  externalMbPer100k: number;
  /** Median of the pairwise slopes (Theil–Sen) of RSS over the same samples: one outlier cannot move it. */
  rssMbPer100kMedian: number;
  /** Samples the slopes were fitted over: after warm-up, and after the first heap snapshot (taking one grows RSS by ~100 MB once). */
  fittedSamples: number;
  warmupNotifications: number;
  /** Flood notifications sent, and applied per flood second. */
  sent: number;
  throughput: number;
  /** Same generator and pacing into a plain pg LISTEN client (JSON.parse only), before the sidecar started. */
  baselineThroughput: number;
  /** POST /v1/sync after a batch: commit → applied, ms. */
  syncP50Ms: number;
  syncP99Ms: number;
  /** Request latency under the flood, ms (the flood keeps the sidecar's event loop busy by design). */
  getP50Ms: number;
  getP99Ms: number;
  searchP50Ms: number;
  searchP99Ms: number;
  probes: number;
  staleReads: number;
  staleDetails: string[];
  /** Notifications committed but never applied (flood + probe writes − applied). */
  lost: number;
  invalidNotifications: number;
  reconnects: number;
  flushes: number;
  expectedFlushes: number;
  requests: Record<string, number>;
  unexpectedResponses: number;
  /** Request or probe steps that threw (timeouts, resets), with a few messages. */
  loopErrors: number;
  loopErrorSamples: string[];
  maxQueueUsage: number;
  /** Sidecar log lines by level:msg. */
  logLines: Record<string, number>;
  /** Sidecar warn/error lines by message: count and the first one's component and error. */
  warnings: Record<string, { count: number; first: string }>;
  readyAfter: number;
  freshAfterFlood: boolean;
  sidecarExitCode: number | null;
  heapSnapshots: string[];
}

const ADMIN_URL = process.env.BENCH_DATABASE_URL ?? process.env.TEST_DATABASE_URL ?? 'postgresql://postgres@127.0.0.1:5432/postgres';
const MB = 1024 * 1024;
const PERSONALITIES = 20;
const HOT = 3;
const MEMORIES_PER_HOT = 500;
/** Ids nobody has: GETs of them exercise the negative cache (404). */
const MISSING = [randomUUID(), randomUUID()];
/** A table-scope event (whole-cache flush) every this many notifications, alternating personalities / memories. */
const TABLE_SCOPE_EVERY = 20_000;
/** After a forced GC, before RSS is read. */
const GC_SETTLE_MS = 500;
/** Sync barriers wait behind the whole backlog. */
const SYNC_TIMEOUT_MS = 30_000;

const round = (x: number, d = 2) => Math.round(x * 10 ** d) / 10 ** d;
function pct(xs: number[], p: number): number {
  if (xs.length === 0) return Number.NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
}

/** Theil–Sen: the median of the slopes between every pair of points. */
export function medianSlope(points: Array<[number, number]>): number {
  const slopes: number[] = [];
  for (let i = 0; i < points.length; i++)
    for (let j = i + 1; j < points.length; j++) {
      const [x1, y1] = points[i]!;
      const [x2, y2] = points[j]!;
      if (x2 !== x1) slopes.push((y2 - y1) / (x2 - x1));
    }
  return pct(slopes, 50);
}

/** Least-squares slope of y over x. */
export function slope(points: Array<[number, number]>): number {
  const n = points.length;
  if (n < 2) return Number.NaN;
  const mx = points.reduce((a, [x]) => a + x, 0) / n;
  const my = points.reduce((a, [, y]) => a + y, 0) / n;
  let num = 0;
  let den = 0;
  for (const [x, y] of points) {
    num += (x - mx) * (y - my);
    den += (x - mx) ** 2;
  }
  return den === 0 ? Number.NaN : num / den;
}

// ---------------------------------------------------------------------------
// The flood's payloads, built in SQL: one statement sends `n` notifications.

interface Kind {
  /** Share of the flood, per mille. */
  permille: number;
  /** SQL: the Prisma model the event names. */
  model: string;
  op: string;
  scope: 'rows' | 'partitions';
  /** The event's fields, as JSON. */
  fields: string;
  /** SQL: the inside of the `rows` / `gone` arrays (tuples of quoted uuids). */
  rows: string;
  gone: string;
}

const quoted = (...exprs: string[]) => exprs.map((e) => `'"' || ${e} || '"'`).join(` || ',' || `);
/** Tuples, each a JSON array of quoted values: tuples(['u', 'cp'], ['u2', 'cp']). */
const tuples = (...ts: string[][]) => ts.map((t) => `'[' || ${quoted(...t)} || ']'`).join(` || ',' || `);
const pickOp = (...ops: string[]) => `(ARRAY[${ops.map((o) => `'${o}'`).join(',')}])[1 + (seq % ${ops.length})::int]`;
const lit = (s: string) => `'${s}'`;
const PERSONALITY = { model: lit('Personality'), fields: '["id"]' };
const CONFIG = { model: lit('LlmConfig'), fields: '["id","personalityId"]' };
const MEMORY = { model: lit('Memory'), fields: '["id","personalityId"]' };
const none = `''`;

/**
 * Per row: `cp` a cached personality, `hp` a hot one, `hm`/`hmp` a real
 * memory and its personality, `u`/`u2` ids nobody has. v2 events as the
 * generated triggers send them (src/capture/triggers.ts): mostly rows-scope
 * events aimed at what the requests keep cached, so the flood evicts,
 * patches and re-reads for real; the rest are ignored, as most events of a
 * busy database are for a given sidecar.
 */
const KINDS: Kind[] = [
  { permille: 150, ...PERSONALITY, op: lit('UPDATE'), scope: 'rows', rows: tuples(['cp']), gone: none },
  { permille: 150, ...PERSONALITY, op: pickOp('INSERT', 'UPDATE'), scope: 'rows', rows: tuples(['u']), gone: none },
  { permille: 20, ...PERSONALITY, op: lit('DELETE'), scope: 'rows', rows: none, gone: tuples(['u']) },
  { permille: 60, ...CONFIG, op: pickOp('INSERT', 'UPDATE'), scope: 'rows', rows: tuples(['u', 'cp']), gone: none },
  { permille: 30, ...CONFIG, op: lit('DELETE'), scope: 'rows', rows: none, gone: tuples(['u']) },
  { permille: 50, ...CONFIG, op: pickOp('INSERT', 'UPDATE'), scope: 'rows', rows: tuples(['u', 'u2']), gone: none },
  // Hot-set patches: an unknown id is fetched and found absent; a real one is re-read and replaced.
  { permille: 150, ...MEMORY, op: pickOp('INSERT', 'UPDATE'), scope: 'rows', rows: tuples(['u', 'hp']), gone: none },
  { permille: 50, ...MEMORY, op: lit('UPDATE'), scope: 'rows', rows: tuples(['hm', 'hmp']), gone: none },
  { permille: 20, ...MEMORY, op: lit('DELETE'), scope: 'rows', rows: none, gone: tuples(['u']) },
  { permille: 80, ...MEMORY, op: pickOp('INSERT', 'UPDATE'), scope: 'rows', rows: tuples(['u', 'u2']), gone: none },
  { permille: 60, model: lit('Memory'), fields: '["personalityId"]', op: pickOp('INSERT', 'UPDATE'), scope: 'partitions', rows: tuples(['u'], ['u2']), gone: none },
  { permille: 40, ...PERSONALITY, op: lit('UPDATE'), scope: 'rows', rows: tuples(['cp'], ['u']), gone: none },
  { permille: 139, ...PERSONALITY, op: lit('UPDATE'), scope: 'rows', rows: tuples(['cp'], ['u']), gone: none },
  // A hot set dropped: the next search reloads it (load/drop churn of the native vector blocks).
  { permille: 1, model: lit('Memory'), fields: '["personalityId"]', op: lit('INSERT'), scope: 'partitions', rows: tuples(['hp']), gone: none },
];

function floodSql(): string {
  if (KINDS.reduce((a, k) => a + k.permille, 0) !== 1000) throw new Error('KINDS must add up to 1000 per mille');
  const column = (pick: (k: Kind) => string, tableScope: [string, string]) => {
    let bound = 0;
    const arms = KINDS.map((k) => `WHEN k < ${(bound += k.permille)} THEN ${pick(k)}`).join(' ');
    return `CASE WHEN seq % ${2 * TABLE_SCOPE_EVERY} = 0 THEN ${tableScope[0]} WHEN seq % ${TABLE_SCOPE_EVERY} = 0 THEN ${tableScope[1]} ${arms} END`;
  };
  return `
    WITH s AS (
      SELECT g, seq, (seq % 1000)::int AS k, u, u2,
             ($3::uuid[])[1 + floor(r * cardinality($3::uuid[]))::int] AS cp,
             ($4::uuid[])[1 + (seq % cardinality($4::uuid[]))::int] AS hp,
             ($5::uuid[])[1 + m] AS hm, ($6::uuid[])[1 + m] AS hmp
      FROM (SELECT g, $1::bigint + g AS seq, random() AS r, floor(random() * cardinality($5::uuid[]))::int AS m,
                   gen_random_uuid() AS u, gen_random_uuid() AS u2
            FROM generate_series(1, $2::int) g) x
    ), e AS (
      SELECT g,
             ${column((k) => k.model, [lit('Personality'), lit('Memory')])} AS model,
             ${column((k) => k.op, [lit('TRUNCATE'), lit('TRUNCATE')])} AS op,
             ${column((k) => lit(k.scope), [lit('model'), lit('model')])} AS scope,
             ${column((k) => lit(k.fields), [lit('[]'), lit('[]')])} AS fields,
             ${column((k) => k.rows, [none, none])} AS rows,
             ${column((k) => k.gone, [none, none])} AS gone
      FROM s
    )
    -- chunk = g of chunks = n keeps every payload of the transaction distinct (pg_notify folds duplicates).
    SELECT count(pg_notify('memory_sync', format(
      '{"ms":2,"model":"%s","op":"%s","txid":"%s","ts":%s,"scope":"%s","fields":%s,"rows":[%s],"gone":[%s],"chunk":%s,"chunks":%s}',
      model, op, pg_current_xact_id(), round(extract(epoch FROM clock_timestamp()) * 1000, 3), scope, fields, rows, gone, g, $2::int)))::int AS sent
    FROM e`;
}

/** Table-scope events among flood sequence numbers 1..sent. */
const tableScopeEvents = (sent: number) => Math.floor(sent / TABLE_SCOPE_EVERY);

interface Seed {
  personalities: string[];
  hot: string[];
  memoryIds: string[];
  memoryPids: string[];
}

async function seed(db: pg.Client): Promise<Seed> {
  const personalities: string[] = [];
  for (let i = 0; i < PERSONALITIES; i++) {
    const { rows } = await db.query<{ id: string }>(
      `INSERT INTO personalities (name, "displayName", "systemPrompt", "updatedAt") VALUES ($1, $1, 'You are ' || $1, now()) RETURNING id`,
      [`soak-${i}`],
    );
    const id = rows[0]!.id;
    personalities.push(id);
    await db.query(`INSERT INTO llm_configs ("personalityId", model, "updatedAt") VALUES ($1, 'model-' || $2, now())`, [id, i]);
  }
  const hot = personalities.slice(0, HOT);
  for (const id of hot) {
    await db.query(
      `INSERT INTO memories ("personalityId", "channelId", content, embedding)
       SELECT $1, 'c' || (g % 4), 'memory ' || g,
              (SELECT array_agg(random() - 0.5)::vector FROM generate_series(1, ${EMBEDDING_DIMENSION}) WHERE g >= 0)
       FROM generate_series(1, $2::int) g`,
      [id, MEMORIES_PER_HOT],
    );
  }
  await db.query('REINDEX INDEX idx_memories_embedding');
  await db.query('ANALYZE');
  const { rows } = await db.query<{ id: string; pid: string }>(`SELECT id, "personalityId" AS pid FROM memories ORDER BY id`);
  return { personalities, hot, memoryIds: rows.map((r) => r.id), memoryPids: rows.map((r) => r.pid) };
}

// ---------------------------------------------------------------------------
// Pacing: a worker reserves a batch below the current boundary, commits it,
// then waits until it has been applied (the sidecar's /v1/sync barrier).

class QueueWatch extends EventEmitter {
  usage = 0;
  max = 0;
  private timer: NodeJS.Timeout | undefined;
  private busy = false;

  constructor(
    private readonly db: pg.Client,
    private readonly limit: number,
  ) {
    super();
    this.setMaxListeners(100);
  }

  get ok(): boolean {
    return this.usage <= this.limit;
  }

  async start(): Promise<void> {
    await this.poll();
    // Polled: PostgreSQL has no event for queue usage.
    this.timer = setInterval(() => void this.poll(), 250);
  }

  private async poll(): Promise<void> {
    if (this.busy) return;
    this.busy = true;
    try {
      const { rows } = await this.db.query<{ usage: number }>('SELECT pg_notification_queue_usage() AS usage');
      const was = this.ok;
      this.usage = Number(rows[0]!.usage);
      this.max = Math.max(this.max, this.usage);
      if (was !== this.ok) this.emit('change');
    } finally {
      this.busy = false;
    }
  }

  stop(): void {
    clearInterval(this.timer);
  }
}

class Flood extends EventEmitter {
  reserved = 0;
  confirmed = 0;
  private boundary = 0;
  private stopped = false;
  private failure: Error | undefined;
  private readonly workers: Array<Promise<void>>;
  private readonly sql = floodSql();
  private readonly wake = () => this.emit('change');

  constructor(
    conns: pg.Client[],
    private readonly params: (base: number, n: number) => unknown[],
    private readonly batch: number,
    /** Resolves once everything this connection committed has been applied. */
    private readonly applied: (conn: pg.Client) => Promise<void>,
    private readonly queue: QueueWatch,
  ) {
    super();
    this.setMaxListeners(100);
    queue.on('change', this.wake);
    this.workers = conns.map((c) =>
      this.worker(c).catch((err: Error) => {
        this.failure ??= err;
        this.stopped = true;
        this.emit('change');
      }),
    );
  }

  /** Lets the flood run until `boundary` notifications are applied. */
  async runTo(boundary: number): Promise<void> {
    this.boundary = boundary;
    this.emit('change');
    while (this.confirmed < boundary) {
      if (this.failure) throw this.failure;
      if (this.stopped) throw new Error('flood stopped');
      await once(this, 'change');
    }
  }

  private async worker(conn: pg.Client): Promise<void> {
    for (;;) {
      while (!this.stopped && (this.reserved >= this.boundary || !this.queue.ok)) await once(this, 'change');
      if (this.stopped) return;
      const n = Math.min(this.batch, this.boundary - this.reserved);
      const base = this.reserved;
      this.reserved += n;
      const { rows } = await conn.query<{ sent: number }>(this.sql, this.params(base, n));
      if (rows[0]!.sent !== n) throw new Error(`sent ${rows[0]!.sent} of ${n}`);
      await this.applied(conn);
      this.confirmed += n;
      this.emit('change');
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.emit('change');
    await Promise.all(this.workers);
    this.queue.off('change', this.wake);
    if (this.failure) throw this.failure;
  }
}

/** Lets the request and probe loops be paused, and tells when the last one in flight is done. */
class Gate extends EventEmitter {
  paused = false;
  stopped = false;
  private active = 0;

  constructor() {
    super();
    this.setMaxListeners(100);
  }

  /** False once stopped. */
  async enter(): Promise<boolean> {
    while (this.paused && !this.stopped) await once(this, 'resume');
    if (this.stopped) return false;
    this.active++;
    return true;
  }

  leave(): void {
    if (--this.active === 0) this.emit('idle');
  }

  async pause(): Promise<void> {
    this.paused = true;
    while (this.active > 0) await once(this, 'idle');
  }

  resume(): void {
    this.paused = false;
    this.emit('resume');
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.emit('resume');
    while (this.active > 0) await once(this, 'idle');
  }
}

// ---------------------------------------------------------------------------
// The sidecar process, its HTTP API, /metrics and the inspector.

const logLine = z.looseObject({
  level: z.number(),
  msg: z.string(),
  url: z.string().optional(),
  component: z.string().optional(),
  err: z.looseObject({ type: z.string().optional(), message: z.string().optional() }).optional(),
});
const personalityBody = z.looseObject({ id: z.string(), displayName: z.string() });
const searchBody = z.object({ results: z.array(z.looseObject({ id: z.string(), similarity: z.number() })) });
const cdpReply = z.looseObject({ id: z.number().optional(), method: z.string().optional(), result: z.unknown().optional(), error: z.looseObject({ message: z.string() }).optional(), params: z.unknown().optional() });
const heapUsage = z.looseObject({ usedSize: z.number(), totalSize: z.number() });
const snapshotChunk = z.object({ chunk: z.string() });

/** A minimal Chrome DevTools Protocol session: full GC, heap usage, heap snapshots. */
class Inspector {
  private id = 0;
  private readonly pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  private onChunk: ((chunk: string) => void) | undefined;

  private constructor(private readonly ws: WebSocket) {
    ws.addEventListener('message', (e) => {
      const msg = cdpReply.parse(JSON.parse(String(e.data)));
      if (msg.method === 'HeapProfiler.addHeapSnapshotChunk') {
        this.onChunk?.(snapshotChunk.parse(msg.params).chunk);
        return;
      }
      if (msg.id === undefined) return;
      const p = this.pending.get(msg.id);
      this.pending.delete(msg.id);
      if (msg.error) p?.reject(new Error(`inspector: ${msg.error.message}`));
      else p?.resolve(msg.result);
    });
    ws.addEventListener('close', () => {
      for (const p of this.pending.values()) p.reject(new Error('inspector closed'));
      this.pending.clear();
    });
  }

  static async open(url: string): Promise<Inspector> {
    const ws = new WebSocket(url);
    await once(ws as unknown as EventTarget, 'open');
    return new Inspector(ws);
  }

  send(method: string, params: Record<string, unknown> = {}): Promise<unknown> {
    const id = ++this.id;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.ws.send(JSON.stringify({ id, method, params }));
    });
  }

  async heapUsedBytes(): Promise<number> {
    return heapUsage.parse(await this.send('Runtime.getHeapUsage')).usedSize;
  }

  async snapshot(path: string): Promise<void> {
    const out = createWriteStream(path);
    this.onChunk = (chunk) => out.write(chunk);
    try {
      await this.send('HeapProfiler.takeHeapSnapshot', { reportProgress: false });
    } finally {
      this.onChunk = undefined;
      out.end();
      await once(out, 'close');
    }
  }

  async close(): Promise<void> {
    if (this.ws.readyState === WebSocket.CLOSED) return;
    const closed = once(this.ws as unknown as EventTarget, 'close');
    this.ws.close();
    await closed;
  }
}

interface Sidecar {
  proc: ChildProcess;
  url: string;
  inspectorUrl: string | undefined;
  exited: Promise<[number | null, NodeJS.Signals | null]>;
  logLines: Record<string, number>;
  warnings: Record<string, { count: number; first: string }>;
}

/** Messages at warn level that the soak causes by design: table-scope events, and "not ready" on SIGTERM. */
const EXPECTED_WARNINGS = new Set(['cache flushed by a table-wide change', 'not ready']);

async function startSidecar(databaseUrl: string, inspect: boolean): Promise<Sidecar> {
  const env: Record<string, string | undefined> = {
    ...process.env,
    DATABASE_URL: databaseUrl,
    MEMORY_SYNC_PORT: '0',
    MEMORY_SYNC_HOST: '127.0.0.1',
    LOG_LEVEL: 'info',
    LOG_PRETTY: 'false',
    MEMORY_SYNC_MIGRATE: 'false',
  };
  delete env.NODE_OPTIONS; // tsx's loader must not ride along into the sidecar
  const args = [...(inspect ? ['--inspect=127.0.0.1:0'] : []), join(PACKAGE_ROOT, 'bin', 'memory-sync.js'), 'start'];
  const proc = spawn(process.execPath, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
  const exited = once(proc, 'exit') as Promise<[number | null, NodeJS.Signals | null]>;
  const logLines: Record<string, number> = {};
  const warnings: Record<string, { count: number; first: string }> = {};
  const stderr: string[] = [];
  let url = '';
  let inspectorUrl: string | undefined;
  let onReady: () => void = () => {};
  const ready = new Promise<void>((resolve) => (onReady = resolve));
  let onInspector: () => void = () => {};
  const inspectorKnown = new Promise<void>((resolve) => (onInspector = resolve));
  if (!inspect) onInspector();

  // Read to the end, always: a full pipe would block the sidecar's synchronous logger.
  createInterface({ input: proc.stdout! }).on('line', (line) => {
    const parsed = logLine.safeParse((() => { try { return JSON.parse(line); } catch { return undefined; } })());
    if (!parsed.success) {
      logLines['unparsed'] = (logLines['unparsed'] ?? 0) + 1;
      stderr.push(line.slice(0, 300));
      return;
    }
    const l = parsed.data;
    const key = `${l.level}:${l.msg}`;
    logLines[key] = (logLines[key] ?? 0) + 1;
    if (l.level >= 40 && !EXPECTED_WARNINGS.has(l.msg)) {
      const w = (warnings[`${l.level === 40 ? 'warn' : 'error'} "${l.msg}"`] ??= { count: 0, first: `${l.component ?? ''} ${l.err?.type ?? ''} ${l.err?.message ?? ''}`.trim() });
      w.count++;
    }
    if (l.msg === 'listening' && l.url) url = l.url;
    if (l.msg === 'ready') onReady();
  });
  createInterface({ input: proc.stderr! }).on('line', (line) => {
    const m = /Debugger listening on (ws:\/\/\S+)/.exec(line);
    if (m) {
      inspectorUrl = m[1];
      onInspector();
    } else if (!/^For help, see|^Debugger attached|^Waiting for the debugger/.test(line)) {
      stderr.push(line);
    }
  });

  const early = exited.then(([code, signal]) => {
    throw new Error(`sidecar exited before ready (code ${code}, signal ${signal}): ${[...stderr, ...Object.keys(warnings)].join('\n')}`);
  });
  await Promise.race([Promise.all([ready, inspectorKnown]), early]);
  early.catch(() => {});
  if (!url) throw new Error('sidecar logged ready without a listening URL');
  return { proc, url, inspectorUrl, exited, logLines, warnings };
}

/** Prometheus text format: sums every series of each metric name. */
function parseMetrics(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{.*\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const value = Number(m[2]);
    if (Number.isFinite(value)) out.set(m[1]!, (out.get(m[1]!) ?? 0) + value);
  }
  return out;
}

function procRssBytes(pid: number): number {
  const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) * 1024 : Number.NaN;
}

class Api {
  readonly http: HttpPool;
  readonly counts: Record<string, number> = {};
  unexpected = 0;
  readonly syncMs: number[] = [];
  readonly getMs: number[] = [];
  readonly searchMs: number[] = [];

  constructor(url: string) {
    this.http = new HttpPool(url, { connections: 8, pipelining: 1 });
  }

  private count(route: string, status: number, expected: readonly number[]): void {
    const key = `${route} ${status}`;
    this.counts[key] = (this.counts[key] ?? 0) + 1;
    if (!expected.includes(status)) this.unexpected++;
  }

  async call(method: 'GET' | 'POST' | 'PUT', path: string, route: string, expected: readonly number[], body?: string): Promise<{ status: number; text: string }> {
    const r = await this.http.request({ method, path, body, headers: body === undefined ? {} : { 'content-type': 'application/json' } });
    const text = await r.body.text();
    this.count(route, r.statusCode, expected);
    return { status: r.statusCode, text };
  }

  async personality(id: string): Promise<z.infer<typeof personalityBody> | null> {
    const t = performance.now();
    const r = await this.call('GET', `/v1/personalities/${id}`, 'GET /v1/personalities/:id', [200, 404]);
    this.getMs.push(performance.now() - t);
    return r.status === 200 ? personalityBody.parse(JSON.parse(r.text)) : null;
  }

  async search(body: string): Promise<z.infer<typeof searchBody>['results']> {
    const t = performance.now();
    const r = await this.call('POST', '/v1/memories/search', 'POST /v1/memories/search', [200], body);
    this.searchMs.push(performance.now() - t);
    return r.status === 200 ? searchBody.parse(JSON.parse(r.text)).results : [];
  }

  /** Resolves once every change committed before the call has been applied by the sidecar. */
  async sync(): Promise<void> {
    const t = performance.now();
    const r = await this.call('POST', '/v1/sync', 'POST /v1/sync', [204], JSON.stringify({ timeoutMs: SYNC_TIMEOUT_MS }));
    if (r.status !== 204) throw new Error(`POST /v1/sync answered ${r.status}: ${r.text}`);
    this.syncMs.push(performance.now() - t);
  }

  async metrics(): Promise<Map<string, number>> {
    const r = await this.call('GET', '/metrics', 'GET /metrics', [200]);
    return parseMetrics(r.text);
  }

  async readyz(): Promise<number> {
    return (await this.call('GET', '/readyz', 'GET /readyz', [200])).status;
  }
}

function randomVector(): number[] {
  return Array.from({ length: EMBEDDING_DIMENSION }, () => Math.round((Math.random() - 0.5) * 1e4) / 1e4);
}

// ---------------------------------------------------------------------------
// The raw baseline: a plain LISTEN client, JSON.parse only, same generator.

const BASELINE_BARRIER = 'soak_baseline_barrier';

async function baselineRate(url: string, params: (base: number, n: number) => unknown[], o: Required<Pick<SoakOptions, 'connections' | 'batch' | 'maxQueueUsage'>>, n: number, watch: QueueWatch): Promise<number> {
  const listener = new pg.Client({ connectionString: url, application_name: 'soak-baseline-listen' });
  await listener.connect();
  const barriers = new EventEmitter();
  barriers.setMaxListeners(100);
  let received = 0;
  let sink = 0;
  listener.on('notification', (m) => {
    if (m.channel === BASELINE_BARRIER) barriers.emit(m.payload ?? '');
    else {
      sink += (JSON.parse(m.payload!) as { chunk: number }).chunk;
      received++;
    }
  });
  await listener.query('LISTEN memory_sync');
  await listener.query(`LISTEN ${BASELINE_BARRIER}`);
  const conns = await connectAll(url, o.connections, 'soak-baseline-flood');
  const flood = new Flood(
    conns,
    params,
    o.batch,
    async (conn) => {
      const token = randomUUID();
      const seen = once(barriers, token);
      await conn.query('SELECT pg_notify($1, $2)', [BASELINE_BARRIER, token]);
      await seen;
    },
    watch,
  );
  const t = performance.now();
  await flood.runTo(n);
  const seconds = (performance.now() - t) / 1000;
  await flood.stop();
  await Promise.all([...conns.map((c) => c.end()), listener.end()]);
  if (received !== n || sink <= 0) throw new Error(`baseline received ${received} of ${n}`);
  return n / seconds;
}

async function connectAll(url: string, count: number, name: string): Promise<pg.Client[]> {
  return Promise.all(
    Array.from({ length: count }, async () => {
      const c = new pg.Client({ connectionString: url, application_name: name });
      await c.connect();
      // No fsync per batch: the flood must not load the shared disk; commit order is unchanged.
      await c.query('SET synchronous_commit = off');
      return c;
    }),
  );
}

// ---------------------------------------------------------------------------

/** Runs the soak on a database of its own; returns the samples and figures. */
export async function soak(options: SoakOptions = {}): Promise<SoakResult> {
  const notifications = options.notifications ?? 1_000_000;
  const sampleEvery = options.sampleEvery ?? 100_000;
  const o = {
    connections: options.connections ?? 3,
    batch: options.batch ?? 1000,
    maxQueueUsage: options.maxQueueUsage ?? 0.01,
  };
  const quietMs = options.quietMs ?? 2000;
  const requestEveryMs = options.requestEveryMs ?? 2;
  const searchEveryMs = options.searchEveryMs ?? 10;
  const probeEveryMs = options.probeEveryMs ?? 1000;
  const maxSeconds = options.maxSeconds ?? Number.POSITIVE_INFINITY;
  const useGc = options.gc ?? true;
  const baselineN = options.baseline ?? Math.min(100_000, Math.floor(notifications / 5));
  const log = options.log ?? ((line: string) => console.error(line));
  const warmupNotifications = Math.ceil((options.warmup ?? Math.max(2 * sampleEvery, 0.2 * notifications)) / sampleEvery) * sampleEvery;

  const adminUrl = options.adminUrl ?? ADMIN_URL;
  const name = `ms_soak_${process.pid}_${randomBytes(4).toString('hex')}`;
  const admin = new pg.Client({ connectionString: adminUrl });
  await admin.connect();
  await admin.query(`CREATE DATABASE "${name}"`);
  const u = new URL(adminUrl);
  u.pathname = `/${name}`;
  const url = u.toString();

  let sidecar: Sidecar | undefined;
  let inspector: Inspector | undefined;
  let api: Api | undefined;
  const gate = new Gate();
  const loops: Array<Promise<void>> = [];
  const clients: pg.Client[] = [];
  let watch: QueueWatch | undefined;
  try {
    await migrate({ databaseUrl: url, migrationsDir: DEFAULT_MIGRATIONS_DIR, schemaPath: DEFAULT_SCHEMA_PATH });
    const db = new pg.Client({ connectionString: url, application_name: 'soak-probe' });
    clients.push(db);
    await db.connect();
    log('seeding…');
    const s = await seed(db);
    const params = (base: number, n: number) => [base, n, s.personalities, s.hot, s.memoryIds, s.memoryPids];

    const watchDb = new pg.Client({ connectionString: url, application_name: 'soak-queue-watch' });
    clients.push(watchDb);
    await watchDb.connect();
    watch = new QueueWatch(watchDb, o.maxQueueUsage);
    await watch.start();

    let baselineThroughput = Number.NaN;
    if (baselineN > 0) {
      log(`baseline: ${baselineN.toLocaleString('en')} notifications into a plain LISTEN client…`);
      baselineThroughput = await baselineRate(url, params, o, baselineN, watch);
    }

    log('starting the sidecar…');
    const t0 = performance.now();
    sidecar = await startSidecar(url, useGc || options.heapSnapshotDir !== undefined);
    const readyAfter = (performance.now() - t0) / 1000;
    const sc = sidecar;
    const pid = sc.proc.pid!;
    if (sc.inspectorUrl) inspector = await Inspector.open(sc.inspectorUrl);
    api = new Api(sc.url);
    const a = api;
    if ((await a.readyz()) !== 200) throw new Error('/readyz is not 200 after ready');

    // Warm the caches: every personality, and the hot sets (loaded in the background after a first search).
    const queries = s.hot.map((pid) => JSON.stringify({ personalityId: pid, embedding: randomVector(), limit: 10 }));
    const warm = async () => {
      for (const id of [...s.personalities, ...MISSING]) await a.personality(id);
      for (let i = 0; ; i++) {
        // A search starts a load of a missing set; a failed load backs off for 5 s, so keep asking.
        if (i % 20 === 0) for (const q of queries) await a.search(q);
        const m = await a.metrics();
        if ((m.get('memory_sync_hot_set_vectors') ?? 0) >= HOT * MEMORIES_PER_HOT) return;
        if (i === 400) throw new Error(`hot sets not loaded: ${m.get('memory_sync_hot_set_vectors')} vectors`);
        await sleep(50); // polled: the sidecar has no event for "loaded" on HTTP
      }
    };
    await warm();
    // Latency figures count the flood only.
    a.getMs.length = 0;
    a.searchMs.length = 0;

    // Load during the flood: sequential loops, paused for samples.
    let loopErrors = 0;
    const loopErrorSamples: string[] = [];
    const loop = (everyMs: number, step: () => Promise<void>) =>
      loops.push(
        (async () => {
          while (await gate.enter()) {
            try {
              await step();
            } catch (err) {
              // Counted and shown in the report; the soak goes on.
              loopErrors++;
              if (loopErrorSamples.length < 10) loopErrorSamples.push((err as Error).message);
            } finally {
              gate.leave();
            }
            await sleep(everyMs);
          }
        })(),
      );
    const readIds = [...s.personalities, ...MISSING];
    let nextRead = 0;
    if (requestEveryMs > 0) loop(requestEveryMs, async () => void (await a.personality(readIds[nextRead++ % readIds.length]!)));
    let nextSearch = 0;
    if (searchEveryMs > 0) loop(searchEveryMs, async () => void (await a.search(queries[nextSearch++ % queries.length]!)));

    // Stale-read probes: a write from outside, sync, read back through the sidecar.
    let probes = 0;
    let probeEvents = 0;
    const staleDetails: string[] = [];
    const stale = (what: string) => {
      if (staleDetails.length < 20) staleDetails.push(what);
    };
    let staleReads = 0;
    const probePersonality = s.personalities[HOT]!; // cached by the GET loop, not hot
    loop(probeEveryMs, async () => {
      probes++;
      const value = `probe-${probes}`;
      await db.query(`UPDATE personalities SET "displayName" = $2, "updatedAt" = now() WHERE id = $1`, [probePersonality, value]);
      probeEvents++;
      await a.sync();
      const got = await a.personality(probePersonality);
      if (got?.displayName !== value) {
        staleReads++;
        stale(`personality ${probePersonality}: ${got?.displayName} after writing ${value}`);
      }
      const hot = s.hot[probes % s.hot.length]!;
      const v = randomVector();
      const { rows } = await db.query<{ id: string }>(
        `INSERT INTO memories ("personalityId", "channelId", content, embedding) VALUES ($1, 'probe', 'probe', $2::vector) RETURNING id`,
        [hot, `[${v.join(',')}]`],
      );
      const memoryId = rows[0]!.id;
      probeEvents++;
      await a.sync();
      const body = JSON.stringify({ personalityId: hot, embedding: v, limit: 1 });
      const found = await a.search(body);
      if (found[0]?.id !== memoryId) {
        staleReads++;
        stale(`memory ${memoryId} inserted, search returned ${found[0]?.id}`);
      }
      await db.query('DELETE FROM memories WHERE id = $1', [memoryId]);
      probeEvents++;
      await a.sync();
      const after = await a.search(body);
      if (after[0]?.id === memoryId) {
        staleReads++;
        stale(`memory ${memoryId} deleted, search still returns it`);
      }
    });

    const floodConns = await connectAll(url, o.connections, 'soak-flood');
    clients.push(...floodConns);
    // One /v1/sync per batch: the barrier passes once the sidecar applied everything committed before it.
    const flood = new Flood(floodConns, params, o.batch, () => a.sync(), watch);
    const heapSnapshots: string[] = [];

    const samples: SoakSample[] = [];
    let floodMs = 0;
    const takeSample = async (snapshot: boolean): Promise<SoakSample> => {
      await gate.pause();
      await a.sync();
      await warm(); // the same caches in every sample: a flush or drop just before must not look like a leak's cure
      await sleep(quietMs); // the forced quiet period
      if (inspector) await inspector.send('HeapProfiler.collectGarbage');
      const heapUsed = inspector ? await inspector.heapUsedBytes() : Number.NaN;
      // V8 returns freed pages to the OS on background threads: RSS read at once still counts them.
      await sleep(GC_SETTLE_MS);
      const m = await a.metrics();
      const procRss = procRssBytes(pid);
      if (snapshot && inspector && options.heapSnapshotDir) {
        const path = join(options.heapSnapshotDir, `soak-${pid}-${samples.length}.heapsnapshot`);
        await inspector.snapshot(path);
        heapSnapshots.push(path);
      }
      gate.resume();
      const prev = samples.at(-1);
      const applied = m.get('memory_sync_invalidations_total') ?? 0;
      const sample: SoakSample = {
        applied,
        rssMb: round((m.get('memory_sync_process_resident_memory_bytes') ?? Number.NaN) / MB),
        procRssMb: round(procRss / MB),
        heapMb: round((Number.isFinite(heapUsed) ? heapUsed : (m.get('memory_sync_nodejs_heap_size_used_bytes') ?? Number.NaN)) / MB),
        externalMb: round((m.get('memory_sync_nodejs_external_memory_bytes') ?? Number.NaN) / MB),
        hotVectors: m.get('memory_sync_hot_set_vectors') ?? Number.NaN,
        floodSeconds: round(floodMs / 1000, 1),
        rate: prev ? Math.round((applied - prev.applied) / ((floodMs / 1000 - prev.floodSeconds) || Number.NaN)) : 0,
      };
      samples.push(sample);
      log(
        `  ${String(sample.applied).padStart(9)} applied  rss ${sample.rssMb} MB  heap ${sample.heapMb} MB  ext ${sample.externalMb} MB  ${sample.rate}/s  queue ${watch!.usage.toExponential(1)}`,
      );
      return sample;
    };

    log(`flood: ${notifications.toLocaleString('en')} notifications, sample every ${sampleEvery.toLocaleString('en')}…`);
    await takeSample(false);
    let target = 0;
    let snapshotTaken = false;
    let fitFrom = 0;
    while (target < notifications && floodMs / 1000 < maxSeconds) {
      target = Math.min(notifications, target + sampleEvery);
      const t = performance.now();
      await flood.runTo(target);
      floodMs += performance.now() - t;
      const firstAfterWarmup: boolean = !snapshotTaken && target >= warmupNotifications;
      const last = target >= notifications || floodMs / 1000 >= maxSeconds;
      await takeSample(firstAfterWarmup || last);
      if (firstAfterWarmup) fitFrom = options.heapSnapshotDir ? samples.length : samples.length - 1;
      snapshotTaken ||= firstAfterWarmup;
    }
    await flood.stop();
    await gate.stop();
    await Promise.all(loops);
    const sent = flood.confirmed;

    // After the flood: no stale read, every notification applied, ready.
    await a.sync();
    const end = await a.metrics();
    const applied = end.get('memory_sync_invalidations_total') ?? 0;
    let freshAfterFlood = true;
    const check = async (value: string, write: () => Promise<void>) => {
      await a.personality(probePersonality); // cached again first, so a missed event would show
      await write();
      const got = await a.personality(probePersonality);
      if (got?.displayName !== value) {
        freshAfterFlood = false;
        staleReads++;
        stale(`after the flood: ${got?.displayName} after writing ${value}`);
      }
    };
    await check('after-flood-sql', async () => {
      await db.query(`UPDATE personalities SET "displayName" = $2, "updatedAt" = now() WHERE id = $1`, [probePersonality, 'after-flood-sql']);
      await a.sync();
    });
    await check('after-flood-put', async () => {
      // Read-your-writes through the sidecar itself, no sync.
      const body = JSON.stringify({ name: `soak-${HOT}`, displayName: 'after-flood-put', systemPrompt: `You are soak-${HOT}` });
      const r = await a.call('PUT', `/v1/personalities/${probePersonality}`, 'PUT /v1/personalities/:id', [200], body);
      if (r.status !== 200) stale(`PUT answered ${r.status}: ${r.text}`);
    });
    const readyz = await a.readyz();

    const fit = samples.slice(fitFrom);
    const points = (pick: (x: SoakSample) => number) => fit.map((x): [number, number] => [x.applied / 100_000, pick(x)]);
    const per100k = (pick: (x: SoakSample) => number) => slope(points(pick));
    const result: SoakResult = {
      samples,
      rssMbPer100k: round(per100k((x) => x.rssMb), 3),
      heapMbPer100k: round(per100k((x) => x.heapMb), 3),
      externalMbPer100k: round(per100k((x) => x.externalMb), 3),
      rssMbPer100kMedian: round(medianSlope(points((x) => x.rssMb)), 3),
      fittedSamples: fit.length,
      warmupNotifications,
      sent,
      throughput: Math.round(sent / (floodMs / 1000)),
      baselineThroughput: Math.round(baselineThroughput),
      syncP50Ms: round(pct(a.syncMs, 50)),
      syncP99Ms: round(pct(a.syncMs, 99)),
      getP50Ms: round(pct(a.getMs, 50)),
      getP99Ms: round(pct(a.getMs, 99)),
      searchP50Ms: round(pct(a.searchMs, 50)),
      searchP99Ms: round(pct(a.searchMs, 99)),
      probes,
      staleReads,
      staleDetails,
      lost: sent + probeEvents - applied,
      invalidNotifications: end.get('memory_sync_invalid_notifications_total') ?? Number.NaN,
      reconnects: end.get('memory_sync_listener_reconnects_total') ?? Number.NaN,
      flushes: end.get('memory_sync_cache_flushes_total') ?? Number.NaN,
      expectedFlushes: tableScopeEvents(sent),
      requests: a.counts,
      unexpectedResponses: a.unexpected,
      loopErrors,
      loopErrorSamples,
      maxQueueUsage: watch.max,
      logLines: sc.logLines,
      warnings: sc.warnings,
      readyAfter: round(readyAfter),
      freshAfterFlood: freshAfterFlood && readyz === 200,
      sidecarExitCode: null,
      heapSnapshots,
    };
    if (readyz !== 200) stale(`/readyz answered ${readyz} after the flood`);

    // SIGTERM: a graceful stop exits 0.
    await inspector?.close();
    inspector = undefined;
    await a.http.close();
    api = undefined;
    sc.proc.kill('SIGTERM');
    const [code] = await sc.exited;
    result.sidecarExitCode = code;
    sidecar = undefined;
    return result;
  } finally {
    watch?.stop();
    gate.stopped = true;
    gate.emit('resume');
    await inspector?.close().catch(() => {});
    await api?.http.close().catch(() => {});
    if (sidecar && sidecar.proc.exitCode === null) {
      sidecar.proc.kill('SIGKILL');
      await sidecar.exited;
    }
    await Promise.all(clients.map((c) => c.end().catch(() => {})));
    await admin.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()', [name]);
    await admin.query(`DROP DATABASE IF EXISTS "${name}"`);
    await admin.end();
  }
}

/** A row in bench/run.ts's figure shape. */
export type SoakFigure = Figure;

/** Growth per 100k beside the level it grows from, and the correctness count, for `npm run bench`. */
export function soakFigures(r: SoakResult): SoakFigure[] {
  const first = r.samples[r.samples.length - r.fittedSamples];
  return [
    {
      figure: 'sidecar RSS growth per 100k notifications (after warm-up)',
      unit: 'MB',
      value: r.rssMbPer100k,
      baseline: first?.rssMb ?? Number.NaN,
      baselineName: 'RSS after warm-up, same run',
      goal: '≤ 0.5 MB per 100k (5 bytes per notification)',
      met: r.rssMbPer100k <= 0.5,
    },
    {
      figure: 'sidecar heap growth per 100k notifications (after GC)',
      unit: 'MB',
      value: r.heapMbPer100k,
      baseline: first?.heapMb ?? Number.NaN,
      baselineName: 'heap after warm-up, same run',
      goal: '≤ 0.1 MB per 100k',
      met: r.heapMbPer100k <= 0.1,
    },
    {
      figure: 'stale reads + lost notifications under the flood',
      unit: 'count',
      value: r.staleReads + r.lost,
      goal: '0',
      met: r.staleReads + r.lost === 0 && r.freshAfterFlood && r.sidecarExitCode === 0,
    },
  ];
}

/** The table and verdict lines. */
export function report(r: SoakResult): string {
  const lines: string[] = [];
  const w = [11, 9, 11, 9, 9, 12, 13, 10];
  const row = (cells: Array<string | number>) => cells.map((c, i) => String(c).padStart(w[i]!)).join(' ');
  lines.push(row(['applied', 'RSS MB', '/proc MB', 'heap MB', 'ext MB', 'ΔRSS/100k', 'Δheap/100k', 'rate/s']));
  r.samples.forEach((x, i) => {
    const p = r.samples[i - 1];
    const per = (a: number, b: number) => (p ? round((a - b) / ((x.applied - p.applied) / 100_000), 2).toFixed(2) : '');
    lines.push(
      row([
        x.applied.toLocaleString('en'),
        x.rssMb.toFixed(1),
        x.procRssMb.toFixed(1),
        x.heapMb.toFixed(1),
        x.externalMb.toFixed(1),
        p ? per(x.rssMb, p.rssMb) : '',
        p ? per(x.heapMb, p.heapMb) : '',
        p ? x.rate.toLocaleString('en') : '',
      ]),
    );
  });
  lines.push('');
  lines.push(`throughput: ${r.throughput.toLocaleString('en')} notifications/s applied (sync-paced, with HTTP load)   raw: ${r.baselineThroughput.toLocaleString('en')}/s (plain pg LISTEN + JSON.parse, same generator and pacing)`);
  lines.push(`sync barrier under flood: p50 ${r.syncP50Ms} ms, p99 ${r.syncP99Ms} ms; max notification queue usage ${r.maxQueueUsage.toExponential(2)}`);
  lines.push(`under flood: GET personality p50 ${r.getP50Ms} ms, p99 ${r.getP99Ms} ms; search p50 ${r.searchP50Ms} ms, p99 ${r.searchP99Ms} ms`);
  lines.push(
    `correctness: ${r.probes} probes, ${r.staleReads} stale reads, ${r.lost} lost, ${r.invalidNotifications} invalid, ${r.reconnects} reconnects, flushes ${r.flushes} (expected ${r.expectedFlushes}), fresh after flood + /readyz 200: ${r.freshAfterFlood}, exit code ${r.sidecarExitCode}`,
  );
  lines.push(`requests: ${Object.entries(r.requests).map(([k, v]) => `${k}: ${v}`).join(', ')}; unexpected statuses: ${r.unexpectedResponses}`);
  for (const d of r.staleDetails) lines.push(`  STALE ${d}`);
  if (r.loopErrors) lines.push(`request/probe errors: ${r.loopErrors} (${r.loopErrorSamples.join('; ')})`);
  for (const [msg, x] of Object.entries(r.warnings)) lines.push(`sidecar ${msg} ×${x.count} (first: ${x.first})`);
  lines.push(
    `RSS growth per 100k after warm-up: ${r.rssMbPer100k} MB (slope by least squares over the last ${r.fittedSamples} samples; median pairwise slope ${r.rssMbPer100kMedian} MB); heap after GC: ${r.heapMbPer100k} MB, external: ${r.externalMbPer100k} MB`,
  );
  return lines.join('\n');
}

async function main(): Promise<void> {
  const positive = z.coerce.number().int().positive();
  const env = z
    .object({
      SOAK_NOTIFICATIONS: positive.default(1_000_000),
      SOAK_SAMPLE_EVERY: positive.default(100_000),
      SOAK_CONNECTIONS: positive.max(16).default(3),
      SOAK_BATCH: positive.max(100_000).default(1000),
      SOAK_QUIET_MS: z.coerce.number().int().min(0).default(2000),
      SOAK_REQUEST_EVERY_MS: z.coerce.number().int().min(0).default(2),
      SOAK_SEARCH_EVERY_MS: z.coerce.number().int().min(0).default(10),
      SOAK_MAX_SECONDS: positive.optional(),
      SOAK_WARMUP: z.coerce.number().int().min(0).optional(),
      SOAK_GC: z.enum(['0', '1']).default('1'),
      SOAK_HEAP_SNAPSHOT_DIR: z.string().min(1).optional(),
    })
    .parse(process.env);
  const r = await soak({
    notifications: env.SOAK_NOTIFICATIONS,
    sampleEvery: env.SOAK_SAMPLE_EVERY,
    connections: env.SOAK_CONNECTIONS,
    batch: env.SOAK_BATCH,
    quietMs: env.SOAK_QUIET_MS,
    requestEveryMs: env.SOAK_REQUEST_EVERY_MS,
    searchEveryMs: env.SOAK_SEARCH_EVERY_MS,
    maxSeconds: env.SOAK_MAX_SECONDS,
    warmup: env.SOAK_WARMUP,
    gc: env.SOAK_GC === '1',
    heapSnapshotDir: env.SOAK_HEAP_SNAPSHOT_DIR,
  });
  console.log(`\nmemory-sync soak: sidecar under a NOTIFY flood (node ${process.version})\n`);
  console.log(report(r));
  if (r.staleReads > 0 || r.lost !== 0 || r.sidecarExitCode !== 0 || !r.freshAfterFlood) process.exitCode = 1;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((err) => {
    console.error(err);
    process.exit(1);
  });
}
