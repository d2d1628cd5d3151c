/**
 * The one reconnect policy for long-lived connections (LISTEN, bus
 * subscriptions, the sidecar's first pool contact): exponential with full
 * jitter between half and all of the step, never giving up.
 *
 *   attempt:  1      2      3      4      5      6      7+
 *   step:     100ms  200ms  400ms  800ms  1.6s   3.2s   5s (cap)
 *
 * A blip costs ~100 ms; a long outage costs one attempt every 2.5–5 s per
 * process, which a 100-connection server shared by a fleet can take.
 */
export interface BackoffOptions {
  /**
   * First delay.
   * @defaultValue 100 — short enough that a blip (a restarted pooler, a
   * terminated backend) is bridged before many lookups see it.
   */
  minMs: number;
  /**
   * Largest delay.
   * @defaultValue 5000 — bounds how long a recovered server waits to be noticed.
   */
  maxMs: number;
}

export const DEFAULT_BACKOFF: Readonly<BackoffOptions> = { minMs: 100, maxMs: 5_000 };

/** Delay before attempt `attempt` (1-based) of a reconnect. */
export function backoffDelay(attempt: number, o: BackoffOptions = DEFAULT_BACKOFF): number {
  const step = Math.min(o.maxMs, o.minMs * 2 ** Math.max(0, attempt - 1));
  return Math.round(step / 2 + (Math.random() * step) / 2);
}

/** Resolves after the delay, or at once when `signal` aborts (never rejects). */
export function sleepUnlessAborted(ms: number, signal: AbortSignal): Promise<void> {
  if (signal.aborted) return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener('abort', done, { once: true });
  });
}
