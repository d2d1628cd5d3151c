import type { SourceState } from '../sources/source.js';

export interface ReadinessReport {
  ready: boolean;
  pool: 'connecting' | 'up';
  listener: SourceState;
  /** The change source's name: listen, pglite, nats, redis. */
  source: string;
  shuttingDown: boolean;
  /** Why it cannot become ready by waiting alone (e.g. the database is not migrated), and what to do. */
  problem?: string;
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
  problem: string | undefined;
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
      ...(this.problem ? { problem: this.problem } : {}),
    };
  }
}
