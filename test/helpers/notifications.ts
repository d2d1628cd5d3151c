import { randomUUID } from 'node:crypto';
import type pg from 'pg';

export interface Received {
  channel: string;
  payload: string;
}

/**
 * Records notifications on a dedicated LISTEN connection. `settle()` sends a
 * marker from the writer and resolves once it arrives: notifications arrive in
 * commit order, so everything committed before it has been received by then.
 */
export class NotificationRecorder {
  readonly received: Received[] = [];
  private waiters: Array<{ token: string; resolve: () => void }> = [];

  private constructor(private readonly listener: pg.Client) {
    listener.on('notification', (n) => {
      if (n.channel === 'test_marker') {
        const i = this.waiters.findIndex((w) => w.token === n.payload);
        if (i >= 0) this.waiters.splice(i, 1)[0]!.resolve();
        return;
      }
      this.received.push({ channel: n.channel, payload: n.payload ?? '' });
    });
  }

  /** Records the generated triggers' channel, and 0.1's cache_invalidation (where nothing may come now; the bot fixture's own triggers use it). */
  static async on(listener: pg.Client): Promise<NotificationRecorder> {
    await listener.query('LISTEN memory_sync');
    await listener.query('LISTEN cache_invalidation');
    await listener.query('LISTEN test_marker');
    return new NotificationRecorder(listener);
  }

  async settle(writer: pg.Client | pg.Pool): Promise<void> {
    const token = randomUUID();
    const seen = new Promise<void>((resolve) => this.waiters.push({ token, resolve }));
    await writer.query('SELECT pg_notify($1, $2)', ['test_marker', token]);
    await seen;
  }

  /** Parsed payloads received so far, then cleared. */
  take(): Array<Record<string, unknown> & { raw: string }> {
    const out = this.received.map((r) => ({ ...JSON.parse(r.payload), raw: r.payload }));
    this.received.length = 0;
    return out;
  }
}
