import { EventEmitter } from 'node:events';
import { randomUUID } from 'node:crypto';
import pgListen, { type Subscriber } from 'pg-listen';
import pRetry from 'p-retry';
import pg from 'pg';
import type { Logger } from 'pino';
import { INVALIDATION_CHANNEL, parsePayload, type InvalidationEvent } from './payload.js';

// pg-listen is CommonJS with `exports.default`.
const createSubscriber = pgListen.default;

/** Our own channel for sync(): a marker we send arrives after every notification committed before it. */
export const BARRIER_CHANNEL = 'memory_sync_barrier';

export type ListenerState = 'idle' | 'connecting' | 'up' | 'down' | 'closed';

export interface ListenerOptions {
  databaseUrl: string;
  logger: Logger;
  /** How often an idle connection is probed; bounds how long a half-open socket goes unnoticed. */
  paranoidIntervalMs: number;
  /** A probe or LISTEN that takes longer than this counts as a dead connection. */
  queryTimeoutMs: number;
  /** Reconnect backoff: min and max delay between attempts. Attempts never stop. */
  retryMinMs: number;
  retryMaxMs: number;
}

export interface ListenerEvents {
  event: [event: InvalidationEvent, receivedAt: number];
  /** `structured`: the payload was a JSON object, only not one we can read. */
  invalid: [reason: string, sample: string, bytes: number, structured: boolean];
  /** LISTEN is confirmed. `reconnected` is true after an outage: notifications in the gap are lost. */
  up: [reconnected: boolean];
  down: [reason: string];
  /** A connect attempt failed; another follows after a backoff. */
  retry: [attempt: number, error: Error];
}

/**
 * One dedicated LISTEN connection (never from the pool, never in a
 * transaction), built on pg-listen with its defaults overridden: it retries
 * forever, parses nothing itself, and probes the socket.
 */
export class Listener extends EventEmitter<ListenerEvents> {
  private subscriber: Subscriber | undefined;
  private _state: ListenerState = 'idle';
  private readonly barriers = new Map<string, () => void>();
  private readonly stop = new AbortController();
  private rebuilding: Promise<void> | undefined;
  private wasUp = false;
  private connecting = false;

  constructor(private readonly options: ListenerOptions) {
    super();
  }

  get state(): ListenerState {
    return this._state;
  }

  get isUp(): boolean {
    return this._state === 'up';
  }

  /** Resolves once LISTEN is confirmed; retries until then (or until close()). */
  async start(): Promise<void> {
    if (this._state !== 'idle') throw new Error(`listener already ${this._state}`);
    this._state = 'connecting';
    await this.connectWithRetry();
  }

  async close(): Promise<void> {
    if (this._state === 'closed') return;
    this._state = 'closed';
    this.stop.abort();
    for (const release of this.barriers.values()) release();
    this.barriers.clear();
    await this.teardown();
  }

  /**
   * Resolves once every notification committed before this call has been
   * handled. Use it for read-your-writes across processes.
   */
  async sync(timeoutMs = 5000): Promise<void> {
    if (!this.subscriber || this._state !== 'up') throw new Error(`listener is ${this._state}`);
    const token = randomUUID();
    const seen = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.barriers.delete(token);
        reject(new Error(`sync barrier not seen within ${timeoutMs} ms`));
      }, timeoutMs);
      this.barriers.set(token, () => {
        clearTimeout(timer);
        resolve();
      });
    });
    await this.subscriber.notify(BARRIER_CHANNEL, token);
    await seen;
  }

  private backoff(attempt: number): number {
    const { retryMinMs, retryMaxMs } = this.options;
    const base = Math.min(retryMaxMs, retryMinMs * 2 ** Math.max(0, attempt));
    return Math.round(base / 2 + (Math.random() * base) / 2);
  }

  private build(): Subscriber {
    const o = this.options;
    const subscriber = createSubscriber(
      {
        connectionString: o.databaseUrl,
        application_name: 'memory-sync-listener',
        keepAlive: true,
        keepAliveInitialDelayMillis: 5_000,
        connectionTimeoutMillis: o.queryTimeoutMs,
        query_timeout: o.queryTimeoutMs,
      },
      {
        paranoidChecking: o.paranoidIntervalMs,
        retryLimit: Infinity,
        retryTimeout: 0, // the default, 3000 ms, gives up for good after a short outage
        retryInterval: (attempt) => this.backoff(attempt),
        parse: (raw) => raw, // parsed by parsePayload, which never throws
      },
    );
    subscriber.events.on('notification', (n) => this.onNotification(n.channel, n.payload));
    subscriber.events.on('reconnect', (attempt) => {
      if (attempt === 1 && !this.connecting) this.markDown('connection lost');
    });
    subscriber.events.on('connected', () => {
      // pg-listen says 'connected' before the first LISTEN; after a reconnect
      // it says so once every channel is listened to again.
      if (this._state === 'down' && !this.connecting) this.markUp();
    });
    subscriber.events.on('error', (err) => {
      if (this.connecting) return; // connectWithRetry handles it
      // pg-listen stops for good after a failed re-LISTEN: start over.
      this.options.logger.warn({ err: { message: err.message } }, 'listener error; rebuilding connection');
      this.markDown(err.message);
      void this.rebuild();
    });
    return subscriber;
  }

  private async connectWithRetry(): Promise<void> {
    this.connecting = true;
    await pRetry(
      async () => {
        if (this.stop.signal.aborted) return;
        // pg-listen retries only after a first success; a failed first
        // connect would start its own endless loop beside ours. Probe first.
        await this.probe();
        const subscriber = this.build();
        this.subscriber = subscriber;
        try {
          await subscriber.connect();
          await subscriber.listenTo(INVALIDATION_CHANNEL);
          await subscriber.listenTo(BARRIER_CHANNEL);
        } catch (err) {
          await this.teardown();
          throw err;
        }
        if (this.stop.signal.aborted) return;
        this.markUp();
      },
      {
        retries: Infinity,
        minTimeout: this.options.retryMinMs,
        maxTimeout: this.options.retryMaxMs,
        randomize: true,
        signal: this.stop.signal,
        onFailedAttempt: ({ error, attemptNumber }) => {
          this.emit('retry', attemptNumber, error);
          this.options.logger.warn({ attempt: attemptNumber, err: { message: error.message } }, 'listener connect failed; retrying');
        },
      },
    )
      .catch((err) => {
        if (!this.stop.signal.aborted) throw err;
      })
      .finally(() => {
        this.connecting = false;
      });
  }

  private async probe(): Promise<void> {
    const client = new pg.Client({
      connectionString: this.options.databaseUrl,
      connectionTimeoutMillis: this.options.queryTimeoutMs,
    });
    client.on('error', () => {});
    try {
      await client.connect();
    } finally {
      await client.end().catch(() => {});
    }
  }

  private rebuild(): Promise<void> {
    this.rebuilding ??= (async () => {
      await this.teardown();
      await this.connectWithRetry();
    })().finally(() => {
      this.rebuilding = undefined;
    });
    return this.rebuilding;
  }

  private async teardown(): Promise<void> {
    const s = this.subscriber;
    this.subscriber = undefined;
    if (!s) return;
    (s.events as unknown as EventEmitter).removeAllListeners();
    s.events.on('error', () => {});
    // pg-listen's reconnect loop ignores close(): end whatever it connects later.
    s.events.on('connected', () => void s.close().catch(() => {}));
    await Promise.race([s.close().catch(() => {}), new Promise<void>((r) => setTimeout(r, 1000).unref())]);
  }

  private markDown(reason: string): void {
    if (this._state === 'closed' || this._state === 'down') return;
    const was = this._state;
    this._state = 'down';
    if (was === 'up') this.emit('down', reason);
  }

  private markUp(): void {
    if (this._state === 'closed') return;
    const reconnected = this.wasUp;
    this.wasUp = true;
    this._state = 'up';
    this.emit('up', reconnected);
  }

  private onNotification(channel: string, raw: unknown): void {
    const receivedAt = performance.timeOrigin + performance.now(); // µs, like the payload's ts
    try {
      if (channel === BARRIER_CHANNEL) {
        const token = typeof raw === 'string' ? raw.replace(/^"|"$/g, '') : '';
        const release = this.barriers.get(token);
        if (release) {
          this.barriers.delete(token);
          release();
        }
        return;
      }
      if (typeof raw !== 'string') {
        this.emit('invalid', 'empty payload', '', 0, false);
        return;
      }
      const parsed = parsePayload(raw);
      if (parsed.ok) this.emit('event', parsed.event, receivedAt);
      else this.emit('invalid', parsed.reason, parsed.sample, parsed.bytes, parsed.structured);
    } catch (err) {
      // A throwing handler must not unwind into pg's socket parser.
      this.options.logger.error({ err }, 'notification handler failed');
    }
  }
}
