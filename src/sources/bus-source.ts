import { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import { z } from 'zod';
import { ConfigError, DatabaseUnavailableError, PermanentError, ValidationError } from '../contract/errors.js';
import { parseOptions } from '../validation/parse.js';
import { timerMs } from '../contract/primitives.js';
import { Barriers } from './barriers.js';
import { backoffDelay, DEFAULT_BACKOFF, sleepUnlessAborted, type BackoffOptions } from './backoff.js';
import type { Bus, BusEntry, BusKind, BusSubscription, StreamState } from './bus/bus.js';
import type { ChangeSource, ChangeSourceEvents, SourceState, UpInfo } from './source.js';

export interface BusSourceOptions {
  /** The bus to read (src/sources/bus: createBus(parseBusUrl(url))). The source owns it and closes it. */
  bus: Bus;
  logger: Logger;
  /**
   * Sends a sync() barrier token through PostgreSQL, so that it enters the
   * bus after every change committed before it: `SELECT pg_notify('memory_sync_barrier', $1)`
   * on the pool. Relays forward it.
   * @defaultValue none — sync() then rejects with a ConfigError.
   */
  notify?: (token: string) => Promise<unknown>;
  /**
   * Delays between reconnect attempts (src/sources/backoff.ts).
   * @defaultValue DEFAULT_BACKOFF — the one policy for long-lived connections.
   */
  backoff?: BackoffOptions;
}

/** Per-source figures for metrics. */
export interface BusSourceStats {
  /** Last stream sequence applied; 0 before the first. */
  lastSequence: number;
  /** Incarnation of the stream that sequence belongs to. */
  epoch: string | null;
  changes: number;
  barriers: number;
  /** Unreadable entries and relayed unreadable notifications (each flushes). */
  invalid: number;
  /** `lost` events and `up` events with `lost` set: each made the cache core flush. */
  gapFlushes: number;
  /** Reconnects that resumed at last + 1: nothing lost, no flush. */
  resumes: number;
  lastGapReason: string | null;
  /** Receive time − the change's `ts` for the last change, ms: commit → this process through the bus. */
  lagMs: number | null;
}

const optionsSchema = z.object({
  backoff: z.object({ minMs: timerMs(0), maxMs: timerMs(1) }).default(DEFAULT_BACKOFF),
});

/** Epoch milliseconds with sub-ms precision, the clock of the payload's `ts`. */
const nowMs = (): number => performance.timeOrigin + performance.now();

interface Cursor {
  epoch: string | null;
  seq: number;
  position: string;
}

/** Why resuming at `cursor` cannot be proven complete, or null. */
export function continuityProblem(cursor: Cursor, state: StreamState): string | null {
  if (state.epoch === null) return 'stream is missing (deleted, or the bus lost its state)';
  if (cursor.epoch !== null && state.epoch !== cursor.epoch) return `stream was recreated (epoch ${cursor.epoch} is now ${state.epoch})`;
  if (state.lastSeq < cursor.seq) return `stream sequence went back from ${cursor.seq} to ${state.lastSeq} (bus lost state)`;
  if (state.firstSeq > cursor.seq + 1) return `stream trimmed past this subscriber (next needed ${cursor.seq + 1}, first kept ${state.firstSeq})`;
  return null;
}

/**
 * Change events from a bus that relays fill (src/relay/relay.ts). Holds no
 * PostgreSQL connection. Remembers the last sequence applied; after a
 * disconnect it resumes at the next one, emits exactly the missed changes,
 * and only then `up` with `lost: null` — no flush. It reports a loss (and the
 * cache core flushes) only when it cannot prove continuity: the stream was
 * trimmed past it, recreated, or lost, or a relay reports a gap. Found on
 * resume, the reason is `up`'s `lost`; found while up, a `lost` event.
 */
export class BusSource extends EventEmitter<ChangeSourceEvents> implements ChangeSource {
  readonly name: BusKind;
  /** The bus keeps what was published while this subscriber was away: the core keeps its contents while down. */
  readonly resumable = true;
  private readonly bus: Bus;
  private readonly logger: Logger;
  private readonly notify: ((token: string) => Promise<unknown>) | undefined;
  private readonly backoff: BackoffOptions;
  private _state: SourceState = 'idle';
  private readonly stop = new AbortController();
  private loop: Promise<void> | undefined;
  private started: { resolve: () => void; reject: (err: Error) => void } | undefined;
  private readonly barriers = new Barriers();
  /** Last entry applied; undefined until the first open. */
  private cursor: Cursor | undefined;
  /** Sequence to reach before `up` after an open. */
  private target = 0;
  private pendingLost: string | null = null;
  private session = 0;
  private sessionOpen = false;
  private endSession: ((reason: string) => void) | undefined;
  private sub: BusSubscription | undefined;
  private wasUp = false;
  private readonly _stats: BusSourceStats = {
    lastSequence: 0,
    epoch: null,
    changes: 0,
    barriers: 0,
    invalid: 0,
    gapFlushes: 0,
    resumes: 0,
    lastGapReason: null,
    lagMs: null,
  };

  constructor(options: BusSourceOptions) {
    super();
    const o = parseOptions(optionsSchema, { backoff: options.backoff }, 'busSource');
    this.bus = options.bus;
    this.name = options.bus.kind;
    this.logger = options.logger;
    this.notify = options.notify;
    this.backoff = o.backoff;
  }

  get state(): SourceState {
    return this._state;
  }

  get isUp(): boolean {
    return this._state === 'up';
  }

  /** A copy of the counters, for metrics. */
  get stats(): BusSourceStats {
    return { ...this._stats };
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
    this.stop.abort();
    this.barriers.rejectAll(new DatabaseUnavailableError('change source closed'));
    this.started?.resolve();
    this.started = undefined;
    this.endSession?.('closed');
    await this.loop;
    await this.bus.close();
  }

  /**
   * Resolves once the barrier sent now through PostgreSQL comes back through
   * the bus: every change committed before the call has been emitted. A
   * barrier outlives a short disconnect (the bus keeps it). Rejects, never
   * throws, with DatabaseUnavailableError when the source is not up, the
   * notify fails, or the barrier is not back within `timeoutMs`.
   */
  sync(timeoutMs = 5_000): Promise<void> {
    const t = timerMs(1).safeParse(timeoutMs);
    if (!t.success) return Promise.reject(new ValidationError('timeoutMs', t.error.issues[0]?.message ?? 'invalid'));
    const notify = this.notify;
    if (!notify) return Promise.reject(new ConfigError('notify', 'BusSource needs a notify(token) function for sync()'));
    if (this._state !== 'up') return Promise.reject(new DatabaseUnavailableError(`change source is ${this._state}`));
    return this.barriers.wait(timeoutMs, notify);
  }

  private async run(): Promise<void> {
    let attempt = 0;
    while (!this.stop.signal.aborted) {
      let ended: Promise<string>;
      try {
        await this.bus.connect();
        ({ ended } = await this.open());
      } catch (err) {
        await this.closeSession();
        if (this.stop.signal.aborted) break;
        if (err instanceof PermanentError && this.started) {
          // Retrying cannot fix bad credentials: say so now.
          this._state = 'closed';
          this.started.reject(err);
          this.started = undefined;
          return;
        }
        attempt++;
        this.emit('retry', attempt, err as Error);
        this.logger.warn({ source: this.name, attempt, err }, 'bus subscribe failed; retrying');
        await sleepUnlessAborted(backoffDelay(attempt, this.backoff), this.stop.signal);
        continue;
      }
      attempt = 0;
      const reason = await ended;
      await this.closeSession();
      this.markDown(reason);
      if (this.stop.signal.aborted) break;
      this.logger.warn({ source: this.name, reason, lastSequence: this.cursor?.seq }, 'bus subscription lost; resuming');
      await sleepUnlessAborted(backoffDelay(1, this.backoff), this.stop.signal);
    }
  }

  /** Subscribes after the last entry applied (or at the end, when that cannot be proven complete). */
  private async open(): Promise<{ ended: Promise<string> }> {
    const session = ++this.session;
    const ended = new Promise<string>((resolve) => {
      this.endSession = (reason) => {
        if (this.session === session) this.sessionOpen = false;
        resolve(reason);
      };
    });
    const onDisconnect = (reason: string) => this.endSession?.(reason);
    this.bus.on('disconnect', onDisconnect);
    void ended.then(() => this.bus.off('disconnect', onDisconnect));
    if (this.stop.signal.aborted) this.endSession?.('closed');
    try {
      return await this.subscribeSession(session, ended);
    } catch (err) {
      this.endSession?.(`subscribe failed: ${(err as Error).message}`);
      throw err;
    }
  }

  private async subscribeSession(session: number, ended: Promise<string>): Promise<{ ended: Promise<string> }> {
    await this.bus.ensureStream();
    const st = await this.bus.state();
    const first = this.cursor === undefined;
    const end: Cursor = { epoch: st.epoch, seq: st.lastSeq, position: st.lastPosition };
    let from: Cursor;
    if (this.cursor === undefined) {
      from = end; // nothing cached yet: only what comes next matters
    } else {
      const lost = continuityProblem(this.cursor, st);
      if (lost) {
        this.pendingLost ??= lost;
        from = end;
      } else {
        from = this.cursor;
      }
    }
    this.cursor = from;
    this.target = first || this.pendingLost ? from.seq : st.lastSeq;
    this.sessionOpen = true;
    this.sub = await this.bus.subscribe(from, {
      entry: (e) => this.onEntry(session, e),
      end: (reason) => {
        if (this.session === session) this.endSession?.(reason);
      },
    });
    if (this.session === session && !this.stop.signal.aborted) this.maybeUp();
    return { ended };
  }

  private async closeSession(): Promise<void> {
    this.session++;
    this.sessionOpen = false;
    const sub = this.sub;
    this.sub = undefined;
    await sub?.close().catch(() => {});
  }

  private onEntry(session: number, e: BusEntry): void {
    if (session !== this.session || this._state === 'closed') return;
    try {
      const c = this.cursor!;
      let gap: string | null = null;
      if (e.seq !== null) {
        if (e.epoch !== null && c.epoch !== null && e.epoch !== c.epoch) gap = `stream was recreated (epoch ${c.epoch} is now ${e.epoch})`;
        else if (e.seq > c.seq + 1) gap = `missed sequences ${c.seq + 1} to ${e.seq - 1} (trimmed or lost)`;
        else if (e.seq <= c.seq) gap = `stream sequence went back from ${c.seq} to ${e.seq}`;
      }
      // An unreadable entry has no number: it takes none, and it flushes below.
      this.cursor = { epoch: e.epoch ?? c.epoch, seq: e.seq ?? c.seq, position: e.position };
      this._stats.lastSequence = this.cursor.seq;
      this._stats.epoch = this.cursor.epoch;
      if (gap) this.lost(gap);
      this.deliver(e);
      this.maybeUp();
    } catch (err) {
      // A throwing listener must not unwind into the bus client.
      this.logger.error({ source: this.name, err }, 'change handler failed');
    }
  }

  private deliver(e: BusEntry): void {
    if (!e.parsed.ok) {
      this._stats.invalid++;
      this.emit('invalid', e.parsed.reason, e.parsed.sample, e.parsed.bytes, true);
      return;
    }
    const m = e.parsed.message;
    switch (m.kind) {
      case 'change': {
        const receivedAt = nowMs();
        this._stats.changes++;
        this._stats.lagMs = receivedAt - m.event.ts;
        this.emit('change', m.event, receivedAt);
        return;
      }
      case 'barrier':
        this._stats.barriers++;
        this.emit('barrier', m.token);
        this.barriers.seen(m.token);
        return;
      case 'invalid':
        this._stats.invalid++;
        this.emit('invalid', m.reason, m.sample, m.bytes, true);
        return;
      case 'gap':
        this.lost(`relay ${m.relay}: ${m.reason}`);
        return;
    }
  }

  /** Changes may have been missed: the core flushes now (`lost`) when up, else at the next `up`. */
  private lost(reason: string): void {
    if (this._state === 'up') {
      this._stats.gapFlushes++;
      this._stats.lastGapReason = reason;
      this.logger.warn({ source: this.name, reason, lastSequence: this.cursor?.seq }, 'bus continuity lost; caches flush');
      this.emit('lost', reason);
      return;
    }
    this.pendingLost ??= reason;
  }

  private maybeUp(): void {
    if (this._state === 'up' || this._state === 'closed' || !this.sessionOpen) return;
    if ((this.cursor?.seq ?? 0) < this.target) return;
    const first = !this.wasUp;
    const lost = first ? null : this.pendingLost;
    this.pendingLost = null;
    this.wasUp = true;
    this._state = 'up';
    if (!first) {
      if (lost) {
        this._stats.gapFlushes++;
        this._stats.lastGapReason = lost;
        this.logger.warn({ source: this.name, reason: lost, lastSequence: this.cursor?.seq }, 'bus continuity lost; caches flush');
      } else {
        this._stats.resumes++;
        this.logger.info({ source: this.name, lastSequence: this.cursor?.seq }, 'bus subscription resumed with nothing missed');
      }
    }
    const info: UpInfo = { first, lost };
    this.emit('up', info);
    this.started?.resolve();
    this.started = undefined;
  }

  private markDown(reason: string): void {
    if (this._state === 'closed') return;
    const was = this._state;
    this._state = was === 'connecting' ? 'connecting' : 'down';
    if (was === 'up') this.emit('down', reason);
  }
}
