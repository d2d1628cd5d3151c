import type { Logger } from 'pino';

/**
 * Bounds a warn line that a flood could repeat (bad notifications, retries):
 * at most `perWindow` lines per kind and window (a second unless the call
 * says otherwise); the rest are counted and reported in one line when the
 * window ends.
 */
export class LogLimiter {
  private readonly windows = new Map<string, { start: number; logged: number; suppressed: number; msg: string }>();

  constructor(
    private readonly logger: Logger,
    private readonly perWindow = 10,
  ) {}

  /** `windowMs` 60000 with at most one line: "logged at most once a minute". */
  warn(kind: string, fields: object, msg: string, windowMs = 1000): void {
    const t = performance.now();
    const limit = windowMs === 1000 ? this.perWindow : 1;
    let w = this.windows.get(kind);
    if (!w || t - w.start >= windowMs) {
      w = { start: t, logged: 0, suppressed: 0, msg };
      this.windows.set(kind, w);
    }
    if (w.logged < limit) {
      w.logged++;
      this.logger.warn(fields, msg);
      return;
    }
    if (w.suppressed++ === 0) {
      const window = w;
      const span = windowMs === 1000 ? 'second' : `${Math.round(windowMs / 1000)} s`;
      setTimeout(() => {
        this.logger.warn({ kind, suppressed: window.suppressed }, `${window.msg} (${window.suppressed} more in the last ${span}, not logged)`);
      }, windowMs - (t - w.start)).unref();
    }
  }
}
