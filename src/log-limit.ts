import type { Logger } from 'pino';

/**
 * Bounds a warn line that a flood could repeat (bad notifications, retries):
 * at most `perSecond` lines per kind; the rest are counted and reported in one
 * line when the second ends.
 */
export class LogLimiter {
  private readonly windows = new Map<string, { start: number; logged: number; suppressed: number; msg: string }>();

  constructor(
    private readonly logger: Logger,
    private readonly perSecond = 10,
  ) {}

  warn(kind: string, fields: object, msg: string): void {
    const t = performance.now();
    let w = this.windows.get(kind);
    if (!w || t - w.start >= 1000) {
      w = { start: t, logged: 0, suppressed: 0, msg };
      this.windows.set(kind, w);
    }
    if (w.logged < this.perSecond) {
      w.logged++;
      this.logger.warn(fields, msg);
      return;
    }
    if (w.suppressed++ === 0) {
      const window = w;
      setTimeout(() => {
        this.logger.warn({ kind, suppressed: window.suppressed }, `${window.msg} (${window.suppressed} more in the last second, not logged)`);
      }, 1000 - (t - w.start)).unref();
    }
  }
}
