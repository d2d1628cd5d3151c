import type { Logger } from 'pino';
import type { InvalidationAction, InvalidationInfo } from '../client/memory-sync.js';

export interface NotificationLogOptions {
  logger: Logger;
  /** Lines per window before notifications are only counted. */
  ratePerSecond: number;
  windowMs?: number;
  now?: () => number;
}

interface Aggregate {
  model: string;
  op: string;
  action: InvalidationAction;
  count: number;
  rows: number;
  gone: number;
  maxLagMs: number;
  sumLagMs: number;
}

/** Key tuples listed on one line; the counts are always there. */
const MAX_LISTED_IDS = 10;

const round = (ms: number) => Math.round(ms * 100) / 100;

/**
 * One info line per notification, up to `ratePerSecond` per window; past
 * that, one summary line per (model, op, action) when the window ends. So a
 * flood costs at most rate + (distinct keys) lines per second.
 */
export class NotificationLog {
  private readonly windowMs: number;
  private readonly now: () => number;
  private windowStart = Number.NEGATIVE_INFINITY;
  private logged = 0;
  private readonly pending = new Map<string, Aggregate>();
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly options: NotificationLogOptions) {
    this.windowMs = options.windowMs ?? 1000;
    this.now = options.now ?? (() => performance.now());
  }

  record(info: InvalidationInfo): void {
    const { event, action, lagMs } = info;
    const t = this.now();
    if (t - this.windowStart >= this.windowMs) {
      this.flush();
      this.windowStart = t;
      this.logged = 0;
    }
    if (this.logged < this.options.ratePerSecond) {
      this.logged++;
      this.options.logger.info(
        {
          source: info.source,
          model: event.model,
          op: event.op,
          scope: event.scope,
          rows: event.rows.length,
          gone: event.gone.length,
          fields: event.fields,
          keys: event.rows.slice(0, MAX_LISTED_IDS),
          txid: event.txid,
          chunk: event.chunk,
          chunks: event.chunks,
          lagMs: round(lagMs),
          action,
        },
        'notification',
      );
      return;
    }
    const key = `${event.model} ${event.op} ${action}`;
    let agg = this.pending.get(key);
    if (!agg) {
      agg = { model: event.model, op: event.op, action, count: 0, rows: 0, gone: 0, maxLagMs: 0, sumLagMs: 0 };
      this.pending.set(key, agg);
    }
    agg.count++;
    agg.rows += event.rows.length;
    agg.gone += event.gone.length;
    agg.maxLagMs = Math.max(agg.maxLagMs, lagMs);
    agg.sumLagMs += lagMs;
    if (!this.timer) {
      this.timer = setTimeout(() => this.flush(), Math.max(0, this.windowStart + this.windowMs - t));
      this.timer.unref();
    }
  }

  /** Writes the summaries counted so far. */
  flush(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    for (const a of this.pending.values()) {
      this.options.logger.info(
        {
          model: a.model,
          op: a.op,
          action: a.action,
          count: a.count,
          rows: a.rows,
          gone: a.gone,
          maxLagMs: round(a.maxLagMs),
          avgLagMs: round(a.sumLagMs / a.count),
        },
        'notifications aggregated',
      );
    }
    this.pending.clear();
  }
}
