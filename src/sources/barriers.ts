import { randomUUID } from 'node:crypto';
import { DatabaseUnavailableError } from '../contract/errors.js';

/**
 * The sync() barrier every source uses: a token sent in commit order comes
 * back after every change committed before it. Each wait is one promise,
 * settled once by whichever comes first (token seen, send failed, timeout,
 * source down or closed), so no rejection can be left unobserved and no
 * timer outlives it.
 */
export class Barriers {
  private readonly waiting = new Map<string, (err?: Error) => void>();

  /** Sends a new token with `send` and resolves when `seen(token)` is called for it. */
  wait(timeoutMs: number, send: (token: string) => Promise<unknown>): Promise<void> {
    const token = randomUUID();
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => settle(new DatabaseUnavailableError(`sync barrier not seen within ${timeoutMs} ms`)), timeoutMs);
      const settle = (err?: Error) => {
        if (!this.waiting.has(token)) return;
        clearTimeout(timer);
        this.waiting.delete(token);
        if (err) reject(err);
        else resolve();
      };
      this.waiting.set(token, settle);
      // Called through an async function: a send that throws synchronously rejects too.
      (async () => send(token))().catch((err: unknown) =>
        settle(new DatabaseUnavailableError(`sync barrier not sent: ${(err as Error)?.message ?? String(err)}`, { cause: err })),
      );
    });
  }

  /** A token came back: its wait resolves. Unknown tokens (another process's) are ignored. */
  seen(token: string): void {
    this.waiting.get(token)?.();
  }

  /** Every wait rejects with `err` (the source went down or closed). */
  rejectAll(err: Error): void {
    for (const settle of [...this.waiting.values()]) settle(err);
  }
}
