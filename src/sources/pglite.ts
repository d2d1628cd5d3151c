import { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import { DatabaseUnavailableError, PermanentError } from '../contract/errors.js';
import { Barriers } from './barriers.js';
import { barrierChannel, DEFAULT_CHANNEL, parsePayload } from '../contract/change-event.js';
import { nowMs } from './pg-listen.js';
import type { ChangeSource, ChangeSourceEvents, SourceState } from './source.js';
import type { PgliteHandle } from '../backend/queryable.js';

export interface PgliteSourceOptions {
  /** The embedded database the writes go through (src/backend/embedded.ts). */
  db: PgliteHandle;
  logger: Logger;
  /** The generated triggers' channel. @defaultValue "memory_sync" */
  channel?: string;
}

/**
 * The embedded database's notifications as a change source. PGlite is one
 * in-process session: a NOTIFY committed by any query on it reaches `listen`
 * before that query's promise resolves, nothing sits between (no socket, no
 * reconnect), so once listening the source is up until it is closed and
 * never reports changes lost.
 */
export class PgliteSource extends EventEmitter<ChangeSourceEvents> implements ChangeSource {
  readonly name = 'pglite';
  /** Nothing to replay: in process, no change can be missed while the source is open. */
  readonly resumable = false;
  private _state: SourceState = 'idle';
  private readonly unlisten: Array<() => Promise<void>> = [];
  private readonly barriers = new Barriers();
  private readonly channel: string;
  private readonly barrierChannel: string;

  constructor(private readonly options: PgliteSourceOptions) {
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

  async start(): Promise<void> {
    if (this._state !== 'idle') throw new Error(`change source already ${this._state}`);
    this._state = 'connecting';
    const { db } = this.options;
    try {
      this.unlisten.push(await db.listen(this.channel, (payload) => this.onNotification(this.channel, payload)));
      this.unlisten.push(await db.listen(this.barrierChannel, (payload) => this.onNotification(this.barrierChannel, payload)));
    } catch (err) {
      // In process there is nothing to wait for: a closed or broken database stays so.
      await this.stopListening();
      if (this.closed) return;
      this._state = 'closed';
      throw new PermanentError(`the embedded database cannot LISTEN: ${(err as Error).message}`, undefined, { cause: err });
    }
    if (this.closed) {
      await this.stopListening(); // closed while LISTEN ran
      return;
    }
    this._state = 'up';
    this.emit('up', { first: true, lost: null });
  }

  /**
   * Resolves once every change committed before the call has been emitted:
   * a NOTIFY on the barrier channel through the same session comes back
   * after them. Rejects with DatabaseUnavailableError when not up, when the
   * database is closed, or when the token is not back within `timeoutMs`
   * (@defaultValue 5000, as the LISTEN source; in process it takes well under 1 ms).
   */
  sync(timeoutMs = 5_000): Promise<void> {
    if (this._state !== 'up') return Promise.reject(new DatabaseUnavailableError(`change source is ${this._state}`));
    return this.barriers.wait(timeoutMs, (token) => this.options.db.query('SELECT pg_notify($1, $2)', [this.barrierChannel, token]));
  }

  async close(): Promise<void> {
    if (this._state === 'closed') return;
    this._state = 'closed';
    this.barriers.rejectAll(new DatabaseUnavailableError('change source closed'));
    await this.stopListening();
  }

  /** A getter TypeScript does not narrow: close() may run while start() awaits. */
  private get closed(): boolean {
    return this._state === 'closed';
  }

  private async stopListening(): Promise<void> {
    const fns = this.unlisten.splice(0);
    if (this.options.db.closed) return;
    for (const fn of fns) await fn().catch(() => {});
  }

  private onNotification(channel: string, raw: string): void {
    if (this.closed) return;
    const receivedAt = nowMs();
    try {
      if (channel === this.barrierChannel) {
        this.emit('barrier', raw);
        this.barriers.seen(raw);
        return;
      }
      if (raw === '') {
        this.emit('invalid', 'empty payload', '', 0, false);
        return;
      }
      const parsed = parsePayload(raw);
      if (parsed.ok) this.emit('change', parsed.event, receivedAt);
      else this.emit('invalid', parsed.reason, parsed.sample, parsed.bytes, parsed.ours);
    } catch (err) {
      // PGlite calls listeners from a microtask: a throw there is an uncaught exception.
      this.options.logger.error({ err }, 'change handler failed');
    }
  }
}
