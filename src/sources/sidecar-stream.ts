import { EventEmitter } from 'node:events';
import { randomUUID } from 'node:crypto';
import { DatabaseUnavailableError, type MemorySyncError } from '../contract/errors.js';
import { changeEventSchema } from '../contract/change-event.js';
import type { EventStream, StreamEvent } from './event-stream.js';
import { nowMs } from './pg-listen.js';
import type { ChangeSource, ChangeSourceEvents, SourceState } from './source.js';

/**
 * A sidecar's /v1/events stream as a change source, for the remote client's
 * local cache: the same core and the same rules as in the sidecar. Up only
 * while the stream is open and the sidecar's own source is up; any gap in
 * the stream counts as lost changes.
 */
export class SidecarStreamSource extends EventEmitter<ChangeSourceEvents> implements ChangeSource {
  readonly name = 'sidecar';
  readonly resumable = false;
  private _state: SourceState = 'idle';
  private wasUp = false;
  private readonly barriers = new Map<string, () => void>();
  private _failure: MemorySyncError | undefined;

  constructor(
    private readonly stream: EventStream,
    /** Asks the sidecar for a barrier (POST /v1/sync); it answers after sending `barrier` on the stream. */
    private readonly requestSync: (token: string, timeoutMs: number) => Promise<void>,
  ) {
    super();
    stream.on('refused', (err) => this.refused(err));
    stream.on('disconnected', (err) => this.markDown(`event stream lost: ${err?.message ?? 'closed'}`));
    stream.on('event', (e) => this.onEvent(e));
  }

  get state(): SourceState {
    return this._state;
  }

  get isUp(): boolean {
    return this._state === 'up';
  }

  /** Why the stream stopped for good (the sidecar refused the token: UnauthorizedError, ForbiddenError), else undefined. */
  get failure(): MemorySyncError | undefined {
    return this._failure;
  }

  /** Resolves at once: the local cache serves once the stream says the sidecar is up. */
  async start(): Promise<void> {
    if (this._state !== 'idle') return;
    this._state = 'connecting';
    this.stream.start();
  }

  async close(): Promise<void> {
    this._state = 'closed';
    await this.stream.close();
  }

  async sync(timeoutMs = 5_000): Promise<void> {
    const token = randomUUID();
    const seen = this.isUp
      ? new Promise<void>((resolve) => this.barriers.set(token, resolve))
      : undefined; // not serving: the sidecar's own barrier is all a caller needs
    try {
      await this.requestSync(token, timeoutMs);
      if (seen) {
        let timer: NodeJS.Timeout | undefined;
        const late = new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new DatabaseUnavailableError(`sync barrier not seen on the event stream within ${timeoutMs} ms`)), timeoutMs);
        });
        await Promise.race([seen, late]).finally(() => clearTimeout(timer));
      }
    } finally {
      this.barriers.delete(token);
    }
  }

  /** The sidecar will not serve this token: down for good, with the reason, whether or not the stream was ever up. */
  private refused(err: MemorySyncError): void {
    if (this._state === 'closed') return;
    this._failure = err;
    for (const release of this.barriers.values()) release();
    this.barriers.clear();
    this._state = 'down';
    this.emit('down', `${err.message}; not reconnecting: fix the client's token (createSidecarClient({ token }))`);
  }

  private markDown(reason: string): void {
    for (const release of this.barriers.values()) release(); // the stream is gone: nothing left to wait for
    this.barriers.clear();
    if (this._state !== 'up') return;
    this._state = 'down';
    this.emit('down', reason);
  }

  private markUp(lost: string | null): void {
    if (this._state === 'closed') return;
    const first = !this.wasUp;
    this.wasUp = true;
    this._state = 'up';
    this.emit('up', { first, lost: first ? null : lost });
  }

  private onEvent({ event, data }: StreamEvent): void {
    const d = (typeof data === 'object' && data !== null ? data : {}) as Record<string, unknown>;
    switch (event) {
      case 'state': // first event of every stream
        if (d.listener === 'up') this.markUp('event stream reconnected: events sent meanwhile were not seen');
        else this.markDown(`sidecar change source is ${String(d.listener)}`);
        return;
      case 'down':
        this.markDown(`sidecar: ${String(d.reason ?? 'change source down')}`);
        return;
      case 'reconnect':
        this.markUp('sidecar change source reconnected');
        return;
      case 'flush':
        if (this.isUp) this.emit('lost', `sidecar flushed: ${String(d.reason ?? 'unknown')}`);
        return;
      case 'barrier': {
        const token = String(d.token ?? '');
        this.emit('barrier', token);
        this.barriers.get(token)?.();
        return;
      }
      case 'invalidation': {
        const { action: _a, lagMs: _l, source: _s, ...rest } = d;
        const parsed = changeEventSchema.safeParse(rest);
        if (parsed.success) this.emit('change', parsed.data, nowMs());
        else this.emit('invalid', `invalidation event: ${parsed.error.issues[0]?.message ?? 'invalid'}`, JSON.stringify(d).slice(0, 200), 0, true);
        return;
      }
    }
  }
}
