import type { SourceState } from '../sources/source.js';

export interface ReadinessReport {
  ready: boolean;
  pool: 'connecting' | 'up';
  listener: SourceState;
  /** The change source's name: listen, pglite, nats, redis. */
  source: string;
  shuttingDown: boolean;
}

interface ListenerView {
  readonly state: SourceState;
  readonly name: string;
  readonly isUp: boolean;
}

/**
 * Ready = the pool has answered once, LISTEN is confirmed right now, and no
 * shutdown has begun. The listener is read live: while it is down the engine
 * serves from the database and notifications are being lost, so a balancer
 * should prefer another instance.
 */
export class Readiness {
  poolUp = false;
  shuttingDown = false;
  private listener: ListenerView | undefined;

  attach(listener: ListenerView): void {
    this.listener = listener;
  }

  get ready(): boolean {
    return this.poolUp && (this.listener?.isUp ?? false) && !this.shuttingDown;
  }

  report(): ReadinessReport {
    return {
      ready: this.ready,
      pool: this.poolUp ? 'up' : 'connecting',
      listener: this.listener?.state ?? 'idle',
      source: this.listener?.name ?? 'none',
      shuttingDown: this.shuttingDown,
    };
  }
}
