import { randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { Socket } from 'node:net';
import pg from 'pg';
import { LogicalReplicationService } from 'pg-logical-replication';
import type { Logger } from 'pino';
import { z } from 'zod';
import { toPermanent } from '../../backend/retry.js';
import type { Queryable } from '../../backend/queryable.js';
import {
  checkCaptureName,
  checkServer,
  createSlot,
  dropSlot,
  ensurePublication,
  replicationPermanent,
  slotStatus,
  type CaptureTable,
} from '../../capture/replication.js';
import type { ChangeEvent } from '../../contract/change-event.js';
import { ConfigError, DatabaseUnavailableError, PermanentError, ValidationError } from '../../contract/errors.js';
import { parseOptions } from '../../validation/parse.js';
import { timerMs } from '../../contract/primitives.js';
import { backoffDelay, DEFAULT_BACKOFF, sleepUnlessAborted, type BackoffOptions } from '../backoff.js';
import { Barriers } from '../barriers.js';
import type { ChangeSource, ChangeSourceEvents, SourceState, UpInfo } from '../source.js';
import { ConfirmTracker } from './confirm.js';
import { TextPgoutputPlugin, TransactionAssembler, type LogicalMessage, type StreamMessage } from './decode.js';
import { formatLsn, parseLsn } from './lsn.js';
import type { DecodedTransaction, EventMapper } from './types.js';

/** Prefix of memory-sync's logical messages (sync() barriers and its own catch-up markers). */
export const DEFAULT_MESSAGE_PREFIX = 'memory_sync';

/** The SQL a process runs to put a sync() barrier into the stream (hosts of a replication relay use it too). */
export const EMIT_BARRIER_SQL = 'SELECT pg_logical_emit_message(true, $1, $2)';

/** Every default in one place; each is explained on its option. */
export const REPLICATION_DEFAULTS = {
  slot: 'memory_sync',
  publication: 'memory_sync',
  maxRetainedWalBytes: 1024 ** 3,
  statusIntervalMs: 1_000,
  paranoidIntervalMs: 5_000,
  queryTimeoutMs: 3_000,
  createSlotTimeoutMs: 60_000,
} as const;

export interface ReplicationSourceOptions {
  /** A direct connection (logical replication does not pass through PgBouncer). */
  databaseUrl: string;
  logger: Logger;
  /** Turns each committed transaction into change events (the schema binding's). */
  mapper: EventMapper;
  /**
   * The logical replication slot. One consumer reads a slot at a time: give
   * every in-process host its own, and all relays of one bus the same one.
   * @defaultValue "memory_sync"
   */
  slot?: string;
  /** @defaultValue "memory_sync" */
  publication?: string;
  /**
   * Tables kept in the publication (created or altered at each connect).
   * @defaultValue none — the publication must exist already (made by `adopt`, say).
   */
  tables?: readonly CaptureTable[] | undefined;
  /**
   * When the slot's position may pass a transaction: `emitted`, once its
   * `change` events were emitted (the cache core applies them synchronously);
   * `manual`, only through confirm() (a relay, once the bus took them).
   * @defaultValue "emitted"
   */
  confirm?: 'emitted' | 'manual';
  /**
   * WAL the slot may keep on the server. Past it memory-sync drops its own
   * slot (logging an error), creates a new one and reports the loss (caches
   * flush), rather than fill the server's disk while it lags or waits.
   * PostgreSQL's `max_slot_wal_keep_size` is the server-side backstop for
   * slots nobody reads any more (docs/replication.md).
   * @defaultValue 1073741824 (1 GiB) — hours of a busy bot's writes, a small share of a managed disk.
   */
  maxRetainedWalBytes?: number;
  /**
   * How often the confirmed position is sent and the slot's lag and retained WAL are read.
   * @defaultValue 1000 — a crash replays at most about a second; one small query a second.
   */
  statusIntervalMs?: number;
  /**
   * How often an idle stream is probed (a status message asking for a reply).
   * @defaultValue 5000 — as LISTEN's probe: bounds how long a half-open socket goes unnoticed.
   */
  paranoidIntervalMs?: number;
  /**
   * A connect, query or probe reply slower than this counts as a dead connection.
   * @defaultValue 3000
   */
  queryTimeoutMs?: number;
  /** @defaultValue "memory_sync" */
  messagePrefix?: string;
  /** @defaultValue DEFAULT_BACKOFF (100 ms doubling to 5 s) */
  backoff?: BackoffOptions;
}

/** One committed transaction as handed out (manual confirmation): what to publish, then confirm(commitLsn). */
export interface HandedTransaction {
  /** End of the commit record: the argument for confirm(). */
  commitLsn: string;
  xid: number;
  /** Commit time, epoch ms. */
  commitTime: number;
  events: ChangeEvent[];
  /** sync() barrier tokens committed in it. */
  barriers: string[];
  /** Set when its changes cannot be read or mapped: consumers must flush. */
  invalid: string | null;
  receivedAt: number;
}

export interface ReplicationStats {
  slot: string;
  /** Confirmed (or about to be) to the server: every transaction before it was applied. */
  confirmedLsn: string | null;
  transactions: number;
  changes: number;
  /** Reconnects that resumed from the slot with nothing lost: no flush. */
  resumes: number;
  /** Losses reported (slot created, dropped, invalidated, recreated, past the WAL bound). */
  losses: number;
  lastLossReason: string | null;
  /** Slots this process dropped because they kept more WAL than maxRetainedWalBytes. */
  boundDrops: number;
  /** Server WAL not yet confirmed by this slot, bytes (read every statusIntervalMs). */
  lagBytes: number | null;
  /** WAL the slot keeps on the server's disk, bytes. */
  retainedBytes: number | null;
  /** Commit → receipt of the last transaction, ms; 0 once a keepalive shows the stream caught up. */
  lagMs: number | null;
  /** True while another process holds the slot and this one waits to take over. */
  standby: boolean;
  /** Times a decoded commit was not yet visible to other sessions and waited (the visibility gate). */
  visibilityWaits: number;
}

const optionsSchema = z.object({
  slot: z.string().default(REPLICATION_DEFAULTS.slot),
  publication: z.string().default(REPLICATION_DEFAULTS.publication),
  confirm: z.enum(['emitted', 'manual']).default('emitted'),
  maxRetainedWalBytes: z.number().int().min(1024 * 1024).default(REPLICATION_DEFAULTS.maxRetainedWalBytes),
  statusIntervalMs: timerMs(10).default(REPLICATION_DEFAULTS.statusIntervalMs),
  paranoidIntervalMs: timerMs(10).default(REPLICATION_DEFAULTS.paranoidIntervalMs),
  queryTimeoutMs: timerMs(10).default(REPLICATION_DEFAULTS.queryTimeoutMs),
  messagePrefix: z.string().min(1).max(64).default(DEFAULT_MESSAGE_PREFIX),
  backoff: z.object({ minMs: timerMs(0), maxMs: timerMs(1) }).default(DEFAULT_BACKOFF),
});

/** Epoch milliseconds with sub-ms precision, the clock of change events' `ts`. */
const nowMs = (): number => performance.timeOrigin + performance.now();

/** Prefix of the marker a session emits to learn that it has caught up. */
const UP_MARKER = 'up.';

const SLOT_ACTIVE = '55006';

/**
 * Change events from a logical replication slot (pgoutput through
 * pg-logical-replication). Writers pay no NOTIFY: the server keeps the WAL
 * for the slot until this source confirms it. Resumable: after a blip it
 * reads on from the slot and comes `up` with `lost: null`, so caches keep
 * what they hold. It reports a loss only when it cannot prove continuity:
 * the slot was missing (and created), invalidated, dropped past the WAL
 * bound, or moved past what this process applied.
 *
 * Holds two connections: the replication stream, and a small pool for the
 * slot's bookkeeping and the barriers sync() sends (logical messages).
 */
type Queued =
  | { session: number; kind: 'message'; message: LogicalMessage }
  | { session: number; kind: 'commit'; tx: DecodedTransaction; end: bigint; messages: LogicalMessage[]; broken: string | null; receivedAt: number };

/** `pg_current_snapshot()` as text: "xmin:xmax:xip,xip,…" (64-bit transaction ids). */
export function parseSnapshot(text: string): { xmax: bigint; xip: Set<bigint> } {
  const [, xmax, xip] = text.split(':') as [string, string, string | undefined];
  return { xmax: BigInt(xmax), xip: new Set((xip ?? '').split(',').filter(Boolean).map((x) => BigInt(x))) };
}

const EPOCH = 1n << 32n;

/**
 * Whether a committed transaction's 32-bit xid (what pgoutput sends) is
 * visible in the snapshot: below xmax and not in progress. The epoch is the
 * one that puts the xid nearest xmax (a transaction just decoded is recent).
 */
export function visibleIn(s: { xmax: bigint; xip: Set<bigint> }, xid: number): boolean {
  let full = (s.xmax / EPOCH) * EPOCH + BigInt(xid >>> 0);
  if (full > s.xmax + EPOCH / 2n) full -= EPOCH;
  else if (full < s.xmax - EPOCH / 2n) full += EPOCH;
  return full < s.xmax && !s.xip.has(full);
}

export class ReplicationSource extends EventEmitter<ChangeSourceEvents> implements ChangeSource {
  readonly name = 'replication';
  readonly resumable = true;
  private readonly o: z.output<typeof optionsSchema>;
  private readonly logger: Logger;
  private readonly mapper: EventMapper;
  private readonly databaseUrl: string;
  private readonly tables: readonly CaptureTable[] | undefined;
  private _state: SourceState = 'idle';
  private readonly stop = new AbortController();
  private loop: Promise<void> | undefined;
  private started: { resolve: () => void; reject: (err: Error) => void } | undefined;
  private readonly barriers = new Barriers();
  private readonly assembler = new TransactionAssembler();
  private tracker: ConfirmTracker | undefined;
  private pool: pg.Pool | undefined;
  private service: LogicalReplicationService | undefined;
  private socket: Socket | undefined;
  private session = 0;
  private endSession: ((reason: string) => void) | undefined;
  private upMarker: string | undefined;
  private wasUp = false;
  private pendingLost: string | null = null;
  private dropForBound: string | undefined;
  private lastSent = 0n;
  private lastHeard = 0;
  /** The server process that served this source's last stream (pg_replication_slots.active_pid). */
  private ownWalsender: number | null = null;
  /** True once a stream of this process started: only then is the slot's position its own. */
  private streamed = false;
  private readonly _stats: Omit<ReplicationStats, 'confirmedLsn'>;
  private handTo: ((tx: HandedTransaction) => void) | undefined;
  /** Received, in order, waiting for the visibility gate (gate()). */
  private readonly queue: Queued[] = [];
  private gating = false;
  private paused: { resolve: () => void; promise: Promise<void> } | undefined;

  constructor(options: ReplicationSourceOptions) {
    super();
    this.o = parseOptions(
      optionsSchema,
      {
        slot: options.slot,
        publication: options.publication,
        confirm: options.confirm,
        maxRetainedWalBytes: options.maxRetainedWalBytes,
        statusIntervalMs: options.statusIntervalMs,
        paranoidIntervalMs: options.paranoidIntervalMs,
        queryTimeoutMs: options.queryTimeoutMs,
        messagePrefix: options.messagePrefix,
        backoff: options.backoff,
      },
      'replication',
    );
    checkCaptureName('replication.slot', this.o.slot);
    checkCaptureName('replication.publication', this.o.publication);
    if (typeof options.mapper !== 'function') throw new ConfigError('replication.mapper', 'must be a function (tx) => ChangeEvent[]');
    this.logger = options.logger;
    this.mapper = options.mapper;
    this.databaseUrl = options.databaseUrl;
    this.tables = options.tables;
    this._stats = {
      slot: this.o.slot,
      transactions: 0,
      changes: 0,
      resumes: 0,
      losses: 0,
      lastLossReason: null,
      boundDrops: 0,
      lagBytes: null,
      retainedBytes: null,
      lagMs: null,
      standby: false,
      visibilityWaits: 0,
    };
  }

  get state(): SourceState {
    return this._state;
  }

  get isUp(): boolean {
    return this._state === 'up';
  }

  get slot(): string {
    return this.o.slot;
  }

  get messagePrefix(): string {
    return this.o.messagePrefix;
  }

  get confirmMode(): 'emitted' | 'manual' {
    return this.o.confirm;
  }

  /**
   * Stops reading (backpressure: a relay whose bus is away): the stream
   * closes, the server keeps the WAL, the source reports `down`. resume()
   * reads on from the confirmed position, with no loss.
   */
  pause(reason = 'paused by its consumer'): void {
    if (this.paused || this._state === 'closed') return;
    let resolve: () => void = () => {};
    const promise = new Promise<void>((r) => (resolve = r));
    this.paused = { resolve, promise };
    this.logger.info({ slot: this.o.slot, reason }, 'replication paused');
    this.endSession?.(reason);
  }

  resume(): void {
    const p = this.paused;
    this.paused = undefined;
    p?.resolve();
  }

  get isPaused(): boolean {
    return this.paused !== undefined;
  }

  get stats(): ReplicationStats {
    const safe = this.tracker?.safe;
    return { ...this._stats, confirmedLsn: safe === undefined ? null : formatLsn(safe) };
  }

  start(): Promise<void> {
    if (this._state !== 'idle') return Promise.reject(new Error(`change source already ${this._state}`));
    this._state = 'connecting';
    return new Promise<void>((resolve, reject) => {
      this.started = { resolve, reject };
      this.loop = this.run();
    });
  }

  async close(): Promise<void> {
    if (this._state === 'closed') return;
    this._state = 'closed';
    // What was applied need not be replayed next time: the last status goes out before the FIN.
    const socket = this.socket;
    if (socket && this.sendStatus(false)) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, 500);
        socket.end(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
    this.stop.abort();
    this.barriers.rejectAll(new DatabaseUnavailableError('change source closed'));
    this.started?.resolve();
    this.started = undefined;
    this.endSession?.('closed');
    await this.loop;
    await this.pool?.end().catch(() => {});
  }

  /**
   * Resolves once every change committed before the call has been emitted:
   * a logical message sent now comes back through the stream after them.
   * Rejects (never throws) when the source is not up, the message cannot be
   * sent, or it is not back within `timeoutMs`.
   */
  sync(timeoutMs = 5_000): Promise<void> {
    const t = timerMs(1).safeParse(timeoutMs);
    if (!t.success) return Promise.reject(new ValidationError('timeoutMs', t.error.issues[0]?.message ?? 'invalid'));
    if (this._state !== 'up') return Promise.reject(new DatabaseUnavailableError(`change source is ${this._state}`));
    return this.barriers.wait(timeoutMs, (token) => this.emitMessage(token));
  }

  /**
   * Manual confirmation: every transaction whose commit ends at or before
   * `commitLsn` has been handled (published). The slot's position follows at
   * the next status message.
   */
  confirm(commitLsn: string): void {
    this.tracker?.confirm(parseLsn(commitLsn));
  }

  /**
   * Manual confirmation: `handler` gets each committed transaction before
   * its `change` events (the relay publishes it, then calls confirm()).
   */
  handTransactionsTo(handler: ((tx: HandedTransaction) => void) | undefined): void {
    this.handTo = handler;
  }

  // ------------------------------------------------------------ the loop

  private async run(): Promise<void> {
    let attempt = 0;
    while (!this.stop.signal.aborted) {
      if (this.paused) {
        const aborted = new Promise<void>((r) => this.stop.signal.addEventListener('abort', () => r(), { once: true }));
        await Promise.race([this.paused.promise, aborted]);
        continue;
      }
      let ended: Promise<string>;
      try {
        ({ ended } = await this.open());
      } catch (err) {
        await this.closeSession();
        if (this.stop.signal.aborted) break;
        if (this.dropForBound) await this.dropOwnSlot();
        const code = (err as { code?: string }).code;
        if (code === SLOT_ACTIVE) {
          // Another consumer (the other relay) holds the slot: wait as its standby.
          if (!this._stats.standby) this.logger.info({ slot: this.o.slot, reason: (err as Error).message }, 'replication slot held by another process; waiting to take over');
          this._stats.standby = true;
        } else {
          const permanent = replicationPermanent(err) ?? toPermanent(err);
          if (permanent && this.started) {
            this._state = 'closed';
            this.started.reject(permanent);
            this.started = undefined;
            await this.pool?.end().catch(() => {});
            return;
          }
          this.logger[permanent ? 'error' : 'warn']({ slot: this.o.slot, attempt: attempt + 1, err }, 'replication connect failed; retrying');
        }
        attempt++;
        this.emit('retry', attempt, err as Error);
        await sleepUnlessAborted(backoffDelay(attempt, this.o.backoff), this.stop.signal);
        continue;
      }
      attempt = 0;
      this._stats.standby = false;
      const reason = await ended;
      await this.closeSession();
      this.markDown(reason);
      if (this.dropForBound) await this.dropOwnSlot();
      if (this.stop.signal.aborted) break;
      if (this.paused) continue;
      this.logger.warn({ slot: this.o.slot, reason, confirmed: this.stats.confirmedLsn }, 'replication stream lost; resuming from the slot');
      await sleepUnlessAborted(backoffDelay(1, this.o.backoff), this.stop.signal);
    }
  }

  /** The control connections (slot checks, barriers, snapshots), made on first use. */
  private controlPool(): pg.Pool {
    this.pool ??= (() => {
      const p = new pg.Pool({
        connectionString: this.databaseUrl,
        max: 2,
        application_name: 'memory-sync-replication',
        connectionTimeoutMillis: this.o.queryTimeoutMs,
        idleTimeoutMillis: 30_000,
      });
      p.on('error', () => {}); // an idle connection cut by the server: the pool replaces it
      return p;
    })();
    return this.pool;
  }

  private control(timeoutMs = this.o.queryTimeoutMs): Queryable {
    const pool = this.controlPool();
    // pg reads query_timeout per query too; its types only know it per client.
    return { query: (text, values) => pool.query({ text, values: values as unknown[], query_timeout: timeoutMs } as pg.QueryConfig) as Promise<{ rows: any[] }> };
  }

  /** `pg_current_snapshot()` as text, as a prepared statement: under load the gate asks up to a thousand times a second. */
  private async currentSnapshot(): Promise<string> {
    const r = await this.controlPool().query<{ s: string }>({ name: 'memory_sync_current_snapshot', text: 'SELECT pg_current_snapshot()::text AS s', query_timeout: this.o.queryTimeoutMs } as pg.QueryConfig);
    return r.rows[0]!.s;
  }

  private emitMessage(content: string): Promise<unknown> {
    return this.control().query(EMIT_BARRIER_SQL, [this.o.messagePrefix, content]);
  }

  /** Checks the server and the slot, starts the stream; resolves with a promise of why the session ended. */
  private async open(): Promise<{ ended: Promise<string> }> {
    const db = this.control();
    const server = await checkServer(db);
    if (this.tables) await ensurePublication(db, this.o.publication, this.tables);
    else {
      const { rows } = await db.query<{ n: number }>('SELECT count(*)::int AS n FROM pg_publication WHERE pubname = $1', [this.o.publication]);
      if (rows[0]!.n === 0) throw new PermanentError(`publication ${this.o.publication} does not exist: run \`memory-sync adopt\`, or give the source its tables`, '42704');
    }
    let status = await slotStatus(db, this.o.slot);
    if (status?.activePid != null && status.activePid === this.ownWalsender) {
      // Our own previous stream, which the server has not noticed is gone (it would wait for
      // wal_sender_timeout): end it, or this process would wait for itself as a standby.
      this.logger.info({ slot: this.o.slot, pid: status.activePid }, 'ending this process\'s previous replication stream');
      await db.query('SELECT pg_terminate_backend($1)', [status.activePid]).catch(() => {});
      this.ownWalsender = null;
      status = await slotStatus(db, this.o.slot);
    }
    let lost: string | null = null;
    if (status?.walStatus === 'lost') {
      lost = `replication slot ${this.o.slot} was invalidated (it kept more WAL than max_slot_wal_keep_size)`;
      this.logger.error({ slot: this.o.slot }, `${lost}; dropping and recreating it, caches flush`);
      await dropSlot(db, this.o.slot);
      status = null;
    } else if (status && status.activePid === null && status.retainedBytes > this.o.maxRetainedWalBytes) {
      this.dropForBound = `replication slot ${this.o.slot} kept ${status.retainedBytes} bytes of WAL, past maxRetainedWalBytes (${this.o.maxRetainedWalBytes})`;
      await this.dropOwnSlot();
      lost = this.pendingLost;
      status = null;
    } else if (this.o.confirm === 'emitted' && this.streamed && status?.confirmedFlushLsn && this.tracker && parseLsn(status.confirmedFlushLsn) > this.tracker.safe) {
      // (Relays share their slot: there another relay moving it on is how takeover works.)
      lost = `replication slot ${this.o.slot} moved past what this process applied (${formatLsn(this.tracker.safe)} < ${status.confirmedFlushLsn}): recreated or read by another process`;
    }
    if (!status) {
      const at = await createSlot(this.control(REPLICATION_DEFAULTS.createSlotTimeoutMs), this.o.slot);
      status = await slotStatus(db, this.o.slot);
      if (!status) throw new DatabaseUnavailableError(`replication slot ${this.o.slot} vanished right after it was created`);
      lost ??= `replication slot ${this.o.slot} ${at ? 'created' : 'created by another process'}: changes committed before it are not in it`;
      this.logger.info({ slot: this.o.slot, at: at ?? status.confirmedFlushLsn }, 'replication slot created');
      this.tracker = new ConfirmTracker(parseLsn(status.confirmedFlushLsn ?? '0/0'));
    }
    this.tracker ??= new ConfirmTracker(parseLsn(status.confirmedFlushLsn ?? '0/0'));
    this.tracker.restart(parseLsn(status.confirmedFlushLsn ?? '0/0'));
    if (lost) this.pendingLost ??= lost;
    return this.stream(server.user);
  }

  private async stream(user: string): Promise<{ ended: Promise<string> }> {
    const session = ++this.session;
    let settle: (reason: string) => void = () => {};
    const ended = new Promise<string>((resolve) => (settle = resolve));
    let done = false;
    const timers: NodeJS.Timeout[] = [];
    this.endSession = (reason) => {
      if (done) return;
      done = true;
      for (const t of timers) clearInterval(t);
      // A socket already ending (close() sent its last status) flushes that first.
      const socket = this.socket;
      if (socket && !socket.writableEnded) socket.destroy();
      else if (socket) setTimeout(() => socket.destroy(), 1_000).unref();
      settle(reason);
    };
    this.assembler.reset();
    this.lastSent = 0n;
    const service = new LogicalReplicationService(
      {
        connectionString: this.databaseUrl,
        application_name: 'memory-sync-replication-stream',
        connectionTimeoutMillis: this.o.queryTimeoutMs,
        keepAlive: true,
        keepAliveInitialDelayMillis: 5_000,
        // Our own socket: a half-open one is destroyed, not left to TCP timeouts.
        stream: () => (this.socket = new Socket()),
      } as pg.ClientConfig,
      { acknowledge: { auto: false, timeoutSeconds: 0 } },
    );
    this.service = service;
    const end = (reason: string) => {
      if (session === this.session) this.endSession?.(reason);
    };
    service.on('error', (err: Error) => end(`replication connection error: ${err.message}`));
    service.on('data', (_lsn: string, m: StreamMessage) => this.onMessage(session, m));
    service.on('heartbeat', (lsn: string, _ts: number, reply: boolean) => this.onKeepalive(session, lsn, reply));
    const onAbort = () => end('closed');
    this.stop.signal.addEventListener('abort', onAbort, { once: true });
    void ended.then(() => this.stop.signal.removeEventListener('abort', onAbort));
    if (this.stop.signal.aborted || this.paused) end(this.paused ? 'paused' : 'closed'); // close() or pause() came while the slot was being checked

    const plugin = new TextPgoutputPlugin({ protoVersion: 1, publicationNames: [this.o.publication], messages: true });
    const startAt = formatLsn(this.tracker!.safe);
    const startedStreaming = new Promise<void>((resolve) => service.once('start', () => resolve()));
    const streaming = service.subscribe(plugin, this.o.slot, startAt);
    streaming.then(
      () => end('replication stream ended'),
      (err: Error) => end(`replication stream failed: ${err.message}`),
    );
    // START_REPLICATION fails (slot held by another process, no privilege) before the stream starts.
    const first = await new Promise<Error | null>((resolve) => {
      void startedStreaming.then(() => resolve(null));
      streaming.then(() => resolve(new Error('replication stream ended before it started')), (err: Error) => resolve(err));
      // After the stream's own rejection, which carries the SQLSTATE (55006: slot held elsewhere).
      void ended.then((r) => setImmediate(() => resolve(new Error(r))));
    });
    if (first) {
      end(first.message);
      const permanent = replicationPermanent(first, user);
      throw permanent ?? first;
    }
    this.lastHeard = Date.now();
    this.streamed = true;
    this.logger.debug({ slot: this.o.slot, from: startAt }, 'replication stream started');

    // Caught up once a marker sent now comes back: every commit before it has been handed out.
    const marker = `${UP_MARKER}${randomUUID()}`;
    this.upMarker = marker;
    this.emitMessage(marker).catch((err: Error) => end(`catch-up marker not sent: ${err.message}`));

    let probeSent = 0;
    timers.push(
      setInterval(() => {
        if (probeSent && this.lastHeard < probeSent && Date.now() - probeSent > this.o.queryTimeoutMs) {
          end(`no reply to a probe within ${this.o.queryTimeoutMs} ms`);
          return;
        }
        if (Date.now() - this.lastHeard >= this.o.paranoidIntervalMs && (!probeSent || this.lastHeard >= probeSent)) {
          if (this.sendStatus(true)) probeSent = Date.now();
        }
      }, Math.min(this.o.paranoidIntervalMs, this.o.queryTimeoutMs, 1_000) / 2),
    );
    timers.push(
      setInterval(() => {
        this.sendStatus(false);
        void this.checkSlot(session);
      }, this.o.statusIntervalMs),
    );
    for (const t of timers) t.unref();
    return { ended };
  }

  /** Slot lag and retained WAL; past the bound, the session ends and the slot is dropped. */
  private async checkSlot(session: number): Promise<void> {
    try {
      const s = await slotStatus(this.control(), this.o.slot);
      if (session !== this.session || !s) return;
      this.ownWalsender = s.activePid;
      this._stats.lagBytes = s.lagBytes;
      this._stats.retainedBytes = s.retainedBytes;
      if (s.retainedBytes > this.o.maxRetainedWalBytes && !this.dropForBound) {
        this.dropForBound = `replication slot ${this.o.slot} kept ${s.retainedBytes} bytes of WAL, past maxRetainedWalBytes (${this.o.maxRetainedWalBytes})`;
        this.endSession?.(this.dropForBound);
      }
    } catch (err) {
      this.logger.debug({ err }, 'replication slot check failed');
    }
  }

  /** After the stream closed: drop the slot that kept too much WAL; the next connect creates a new one and reports the loss. */
  private async dropOwnSlot(): Promise<void> {
    const reason = this.dropForBound;
    if (!reason) return;
    try {
      await dropSlot(this.control(), this.o.slot, { waitMs: 10_000 });
      this.dropForBound = undefined;
      this._stats.boundDrops++;
      this.pendingLost ??= reason;
      this.tracker = undefined;
      this.logger.error({ slot: this.o.slot, reason }, 'replication slot dropped rather than fill the server\'s disk; caches flush (set max_slot_wal_keep_size as the server-side bound)');
    } catch (err) {
      this.logger.error({ slot: this.o.slot, err }, 'could not drop the replication slot that is past maxRetainedWalBytes; retrying');
    }
  }

  private async closeSession(): Promise<void> {
    this.session++;
    this.endSession = undefined;
    this.upMarker = undefined;
    if (!this.socket?.writableEnded) this.socket?.destroy();
    this.socket = undefined;
    const service = this.service;
    this.service = undefined;
    if (!service) return;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([service.destroy().catch(() => {}), new Promise<void>((r) => (timer = setTimeout(r, 1_000)))]);
    clearTimeout(timer);
  }

  /**
   * Standby status: the position every transaction before which is handled.
   * pg-logical-replication reports "lsn + 1" as written, flushed and applied,
   * but the server resumes *after* the confirmed position and a commit record
   * may begin exactly where the previous one ended, so it gets safe − 1 and
   * the server sees exactly `safe` (as PostgreSQL's own subscriber sends).
   */
  private sendStatus(ping: boolean): boolean {
    const service = this.service;
    const safe = this.tracker?.safe;
    if (!service || safe === undefined || safe === 0n) return false;
    if (!ping && safe <= this.lastSent) return false;
    this.lastSent = safe;
    void service.acknowledge(formatLsn(safe - 1n), ping).catch(() => {});
    return true;
  }

  private onKeepalive(session: number, lsn: string, reply: boolean): void {
    if (session !== this.session) return;
    this.lastHeard = Date.now();
    if (!this.assembler.inTransaction) {
      this.tracker?.idle(parseLsn(lsn));
      this._stats.lagMs = 0;
    }
    if (reply) this.sendStatus(true);
  }

  private onMessage(session: number, m: StreamMessage): void {
    if (session !== this.session || this._state === 'closed') return;
    this.lastHeard = Date.now();
    try {
      const out = this.assembler.push(m);
      if (out.kind === 'message') this.enqueue({ session, kind: 'message', message: out.message });
      else if (out.kind === 'commit') {
        // Pending until applied: a keepalive meanwhile must not confirm past it.
        this.tracker?.commit(out.end, false);
        this.enqueue({ session, kind: 'commit', tx: out.tx, end: out.end, messages: out.messages, broken: out.broken, receivedAt: nowMs() });
      }
    } catch (err) {
      // A throwing handler must not unwind into pg's socket parser.
      this.logger.error({ err }, 'change handler failed');
    }
  }

  /*
   * The visibility gate. The walsender may send a commit as soon as its WAL
   * is flushed, a moment before the committing backend leaves the process
   * array: a snapshot taken then (a cache re-reading the row) still sees the
   * old row, and would cache it after the eviction. NOTIFY is delivered only
   * after that moment; here each transaction with changes waits until the
   * server's current snapshot shows it committed. One snapshot covers every
   * commit queued at the time, so a burst costs one round trip; in order, so
   * barriers and markers still follow the changes before them.
   */
  private lastSnapshotAt = 0;

  private enqueue(item: Queued): void {
    this.queue.push(item);
    if (!this.gating) void this.gate();
  }

  private async gate(): Promise<void> {
    this.gating = true;
    try {
      let waits = 0;
      while (this.queue.length) {
        const head = this.queue[0]!;
        if (head.session !== this.session || this._state === 'closed') {
          this.queue.shift(); // its stream ended: the slot sends it again
          continue;
        }
        if (head.kind === 'message' || head.tx.changes.length === 0) {
          this.apply(this.queue.shift()!);
          continue;
        }
        let snapshot: { xmax: bigint; xip: Set<bigint> };
        try {
          // At most one snapshot a millisecond: under a write load each one takes ProcArrayLock, which every commit needs too.
          const since = performance.now() - this.lastSnapshotAt;
          if (since < 1) await new Promise((r) => setTimeout(r, 1));
          this.lastSnapshotAt = performance.now();
          snapshot = parseSnapshot(await this.currentSnapshot());
        } catch (err) {
          // Unproven visibility is no reason to guess: the stream starts over from the slot.
          this.endSession?.(`visibility check failed: ${(err as Error).message}`);
          this.queue.length = 0;
          return;
        }
        let applied = 0;
        while (this.queue.length) {
          const q = this.queue[0]!;
          if (q.session !== this.session) break;
          if (q.kind === 'commit' && q.tx.changes.length && !visibleIn(snapshot, q.tx.xid)) break;
          this.apply(this.queue.shift()!);
          applied++;
        }
        if (applied === 0) {
          // Microseconds, as a rule: the backend is between its WAL flush and leaving the process array.
          this._stats.visibilityWaits++;
          await new Promise((r) => setTimeout(r, Math.min(1 + waits++, 20)));
        } else waits = 0;
      }
    } finally {
      this.gating = false;
    }
  }

  private apply(item: Queued): void {
    if (item.session !== this.session || this._state === 'closed') return;
    try {
      if (item.kind === 'message') this.onLogicalMessage(item.message);
      else this.onCommit(item.tx, item.end, item.messages, item.broken, item.receivedAt);
    } catch (err) {
      this.logger.error({ err }, 'change handler failed');
    }
  }

  private onCommit(tx: DecodedTransaction, end: bigint, messages: LogicalMessage[], broken: string | null, receivedAt: number): void {
    this._stats.transactions++;
    this._stats.lagMs = receivedAt - tx.commitTime;
    let events: ChangeEvent[] = [];
    let invalid = broken;
    if (tx.changes.length) {
      try {
        events = this.mapper(tx);
      } catch (err) {
        invalid ??= `event mapper failed on transaction ${tx.xid}: ${(err as Error).message}`;
      }
    }
    const tokens: string[] = [];
    let marker = false;
    for (const msg of messages) {
      if (msg.prefix !== this.o.messagePrefix) continue;
      if (msg.content.startsWith(UP_MARKER)) marker ||= msg.content === this.upMarker;
      else tokens.push(msg.content);
    }
    this._stats.changes += events.length;
    const manual = this.o.confirm === 'manual';
    if (manual) this.handTo?.({ commitLsn: tx.commitLsn, xid: tx.xid, commitTime: tx.commitTime, events, barriers: tokens, invalid, receivedAt });
    for (const e of events) this.emit('change', e, receivedAt);
    if (invalid) this.emit('invalid', invalid, '', 0, true);
    for (const token of tokens) {
      this.emit('barrier', token);
      this.barriers.seen(token);
    }
    if (!manual) this.tracker?.confirm(end);
    if (marker) this.markUp();
  }

  /** A non-transactional message (another tool's, or an older memory-sync's barrier): ordered after every commit before it too. */
  private onLogicalMessage(msg: LogicalMessage): void {
    if (msg.prefix !== this.o.messagePrefix || msg.content.startsWith(UP_MARKER)) return;
    this.emit('barrier', msg.content);
    this.barriers.seen(msg.content);
  }

  private markUp(): void {
    if (this.stop.signal.aborted || this._state === 'up') return;
    const first = !this.wasUp;
    const lost = this.pendingLost;
    this.pendingLost = null;
    this.wasUp = true;
    this._state = 'up';
    if (lost) {
      this._stats.losses++;
      this._stats.lastLossReason = lost;
      this.logger.warn({ slot: this.o.slot, reason: lost }, 'replication continuity lost; caches flush');
    } else if (!first) {
      this._stats.resumes++;
      this.logger.info({ slot: this.o.slot, confirmed: this.stats.confirmedLsn }, 'replication resumed from the slot with nothing missed');
    }
    const info: UpInfo = { first, lost };
    this.emit('up', info);
    this.started?.resolve();
    this.started = undefined;
  }

  private markDown(reason: string): void {
    this.barriers.rejectAll(new DatabaseUnavailableError(`change source went down: ${reason}`));
    if (this._state === 'closed') return;
    const was = this._state;
    this._state = was === 'connecting' ? 'connecting' : 'down';
    if (was === 'up') this.emit('down', reason);
  }
}

/** A source whose consumer confirms transactions itself (the relay): ReplicationSource with `confirm: 'manual'`. */
export function isConfirming(source: ChangeSource): source is ReplicationSource {
  return source instanceof ReplicationSource;
}
