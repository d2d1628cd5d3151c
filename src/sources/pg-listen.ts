import { EventEmitter } from 'node:events';
import { Socket } from 'node:net';
import pg from 'pg';
import type { Logger } from 'pino';
import { toPermanent } from '../backend/retry.js';
import { DatabaseUnavailableError } from '../contract/errors.js';
import { Barriers } from './barriers.js';
import { backoffDelay, sleepUnlessAborted, type BackoffOptions } from './backoff.js';
import { barrierChannel, DEFAULT_CHANNEL, parsePayload } from '../contract/change-event.js';
import type { ChangeSource, ChangeSourceEvents, SourceState } from './source.js';


export interface PgListenOptions {
  /** The LISTEN connection's URL: a direct connection, never through a transaction pooler. */
  databaseUrl: string;
  /**
   * The generated triggers' channel (the declaration's `channel`); sync()
   * markers go on `<channel>_barrier`.
   * @defaultValue "memory_sync"
   */
  channel?: string;
  logger: Logger;
  /** How often the idle connection is probed; bounds how long a half-open socket goes unnoticed. */
  paranoidIntervalMs: number;
  /** A connect, LISTEN, probe or barrier NOTIFY slower than this counts as a dead connection. */
  queryTimeoutMs: number;
  /** Reconnect delays (src/sources/backoff.ts). */
  backoff: BackoffOptions;
}

/** Settles as `work` does, or rejects as soon as `signal` aborts (for a wait that cannot be cancelled). */
async function unlessAborted<T>(work: Promise<T>, signal: AbortSignal): Promise<T> {
  work.catch(() => {}); // may settle after the abort: observed here, not later
  let onAbort = () => {};
  const aborted = new Promise<never>((_, reject) => {
    onAbort = () => reject(new Error('change source closed'));
    if (signal.aborted) onAbort();
    else signal.addEventListener('abort', onAbort, { once: true });
  });
  try {
    return await Promise.race([work, aborted]);
  } finally {
    signal.removeEventListener('abort', onAbort);
  }
}

/** Epoch milliseconds with sub-ms precision, the clock of the payload's `ts`. */
export const nowMs = (): number => performance.timeOrigin + performance.now();

/**
 * PostgreSQL LISTEN as a change source: one dedicated pg.Client (never from
 * the pool, never in a transaction) and one reconnect loop. Every query on
 * the connection (LISTEN, probe, barrier NOTIFY) goes through one queue, so
 * pg never sees two at once. NOTIFY keeps nothing for an absent listener, so
 * every reconnect reports `lost`.
 */
export class PgListenSource extends EventEmitter<ChangeSourceEvents> implements ChangeSource {
  readonly name = 'listen';
  readonly resumable = false;
  private _state: SourceState = 'idle';
  private client: pg.Client | undefined;
  private socket: Socket | undefined;
  private wasUp = false;
  private readonly stop = new AbortController();
  private loop: Promise<void> | undefined;
  private readonly barriers = new Barriers();
  private queue: Promise<unknown> = Promise.resolve();
  private started: { resolve: () => void; reject: (err: Error) => void } | undefined;
  private readonly channel: string;
  private readonly barrierChannel: string;

  constructor(private readonly options: PgListenOptions) {
    super();
    this.channel = options.channel ?? DEFAULT_CHANNEL;
    this.barrierChannel = barrierChannel(this.channel);
  }

  get state(): SourceState {
    return this._state;
  }

  get isUp(): boolean {
    return this._state === 'up';
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
    this.drop();
    await this.loop;
  }

  /**
   * Resolves once every notification committed before this call has been
   * emitted. Rejects with DatabaseUnavailableError when the connection is
   * down, dies meanwhile, or the marker is not back within `timeoutMs`.
   */
  sync(timeoutMs = 5_000): Promise<void> {
    const client = this.client;
    if (!client || this._state !== 'up') return Promise.reject(new DatabaseUnavailableError(`change source is ${this._state}`));
    return this.barriers.wait(timeoutMs, (token) => this.serial(client, 'SELECT pg_notify($1, $2)', [this.barrierChannel, token]));
  }

  private async run(): Promise<void> {
    let attempt = 0;
    while (!this.stop.signal.aborted) {
      let client: pg.Client;
      try {
        client = await this.connect();
      } catch (err) {
        this.drop();
        if (this.stop.signal.aborted) break;
        const permanent = toPermanent(err);
        if (permanent && this.started) {
          // Retrying cannot fix a wrong database or password: say so now.
          this._state = 'closed';
          this.started.reject(permanent);
          this.started = undefined;
          return;
        }
        attempt++;
        this.emit('retry', attempt, err as Error);
        const level = permanent ? 'error' : 'warn';
        this.options.logger[level]({ attempt, err }, 'listener connect failed; retrying');
        await sleepUnlessAborted(backoffDelay(attempt, this.options.backoff), this.stop.signal);
        continue;
      }
      attempt = 0;
      this.markUp();
      const reason = await this.watch(client);
      this.drop();
      this.markDown(reason);
      if (this.stop.signal.aborted) break;
      this.options.logger.warn({ reason }, 'listener connection lost; reconnecting');
      await sleepUnlessAborted(backoffDelay(1, this.options.backoff), this.stop.signal);
    }
  }

  private async connect(): Promise<pg.Client> {
    const o = this.options;
    const client = new pg.Client({
      connectionString: o.databaseUrl,
      application_name: 'memory-sync-listener',
      keepAlive: true,
      keepAliveInitialDelayMillis: 5_000,
      connectionTimeoutMillis: o.queryTimeoutMs,
      query_timeout: o.queryTimeoutMs,
      // Our own socket: a half-open one is destroyed, not left to TCP timeouts.
      stream: () => (this.socket = new Socket()),
    });
    this.client = client;
    this.queue = Promise.resolve();
    client.on('error', () => {}); // reported through watch(); unhandled, it would crash the process
    client.on('notification', (n) => this.onNotification(n.channel, n.payload));
    // close() destroys the socket; pg's connect() never settles for a socket destroyed before it
    // connected, so the wait ends on the abort as well.
    await unlessAborted(client.connect(), this.stop.signal);
    await this.serial(client, `LISTEN ${this.channel}`);
    await this.serial(client, `LISTEN ${this.barrierChannel}`);
    return client;
  }

  /** Resolves with a reason once the connection is gone: closed, errored, or a probe failed. */
  private watch(client: pg.Client): Promise<string> {
    return new Promise<string>((resolve) => {
      const done = (reason: string) => {
        clearInterval(probe);
        this.stop.signal.removeEventListener('abort', onAbort);
        resolve(reason);
      };
      const onAbort = () => done('closed');
      this.stop.signal.addEventListener('abort', onAbort, { once: true });
      client.once('error', (err) => done(`connection error: ${err.message}`));
      client.once('end', () => done('connection ended'));
      // A frozen peer sends no FIN: only a query that times out reveals it.
      const probe = setInterval(() => {
        this.serial(client, 'SELECT 1').catch((err: Error) => done(`probe failed: ${err.message}`));
      }, this.options.paranoidIntervalMs);
      probe.unref();
    });
  }

  /**
   * Queries on the LISTEN connection, one at a time. Any failure (a query
   * timeout on a half-open socket, above all) ends the connection: watch()
   * then reports it and the loop reconnects.
   */
  private serial(client: pg.Client, text: string, values?: unknown[]): Promise<unknown> {
    const run = this.queue.then(() => {
      if (client !== this.client) throw new Error('connection replaced');
      return client.query(text, values);
    });
    this.queue = run.catch(() => {
      if (client === this.client) this.socket?.destroy();
    });
    return run;
  }

  private drop(): void {
    const client = this.client;
    this.client = undefined;
    this.socket?.destroy();
    this.socket = undefined;
    if (client) void client.end().catch(() => {});
  }

  private markDown(reason: string): void {
    this.barriers.rejectAll(new DatabaseUnavailableError(`change source went down: ${reason}`));
    if (this._state !== 'up') return;
    this._state = 'down';
    this.emit('down', reason);
  }

  private markUp(): void {
    if (this.stop.signal.aborted) return;
    const first = !this.wasUp;
    this.wasUp = true;
    this._state = 'up';
    this.emit('up', { first, lost: first ? null : 'LISTEN reconnected: notifications sent meanwhile were not kept' });
    this.started?.resolve();
    this.started = undefined;
  }

  private onNotification(channel: string, raw: string | undefined): void {
    const receivedAt = nowMs();
    try {
      if (channel === this.barrierChannel) {
        const token = raw ?? '';
        this.emit('barrier', token);
        this.barriers.seen(token);
        return;
      }
      if (raw === undefined || raw === '') {
        this.emit('invalid', 'empty payload', '', 0, false);
        return;
      }
      const parsed = parsePayload(raw);
      if (parsed.ok) this.emit('change', parsed.event, receivedAt);
      else this.emit('invalid', parsed.reason, parsed.sample, parsed.bytes, parsed.ours);
    } catch (err) {
      // A throwing handler must not unwind into pg's socket parser.
      this.options.logger.error({ err }, 'change handler failed');
    }
  }
}
