import { EventEmitter } from 'node:events';
import type { Dispatcher } from 'undici';
import { errorFromCode, type MemorySyncError } from '../contract/errors.js';
import { backoffDelay, sleepUnlessAborted } from './backoff.js';

export interface StreamEvent {
  event: string;
  data: unknown;
}

/** The sidecar's answer to a stream it will not serve: no token, a wrong one (401), or too little access (403). */
async function refusal(status: number, body: Dispatcher.ResponseData['body']): Promise<MemorySyncError> {
  let message = `the sidecar refused the event stream (HTTP ${status})`;
  try {
    const b = JSON.parse(await body.text()) as { error?: unknown };
    if (typeof b.error === 'string') message = `the sidecar refused the event stream (HTTP ${status}): ${b.error}`;
  } catch {
    // not JSON (a proxy's page): the status says enough
  }
  return errorFromCode(status === 401 ? 'unauthorized' : 'forbidden', message);
}

/**
 * Follows a sidecar's /v1/events (server-sent events) for as long as it is
 * open, reconnecting with backoff. `connected`/`disconnected` bracket each
 * stream: events sent while it was down are lost, so a consumer flushes.
 * A 401 or 403 is not retried: the same token would be refused again, so the
 * stream emits `refused` (UnauthorizedError or ForbiddenError) and stops.
 */
export class EventStream extends EventEmitter<{
  event: [StreamEvent];
  connected: [];
  disconnected: [error: Error | undefined];
  refused: [error: MemorySyncError];
}> {
  private readonly stop = new AbortController();
  private running: Promise<void> | undefined;

  constructor(
    /** A connection of its own: the stream holds it for as long as it is open. */
    private readonly dispatcher: Dispatcher,
    private readonly path: string,
    /** Longer than the sidecar's 15 s heartbeat: a silent stream is a dead one. */
    private readonly idleTimeoutMs = 45_000,
    /** Sent with every connect: `authorization` when the sidecar asks for a token. */
    private readonly headers: Record<string, string> = {},
  ) {
    super();
  }

  start(): void {
    this.running ??= this.loop();
  }

  /** Resolves once the stream has stopped for good: closed, or refused. */
  get finished(): Promise<void> {
    return this.running ?? Promise.resolve();
  }

  async close(): Promise<void> {
    this.stop.abort();
    await this.running;
    await this.dispatcher.close().catch(() => {});
  }

  private async loop(): Promise<void> {
    for (let attempt = 0; !this.stop.signal.aborted; attempt++) {
      let error: Error | undefined;
      try {
        const res = await this.dispatcher.request({
          method: 'GET',
          path: this.path,
          headers: { ...this.headers, accept: 'text/event-stream' },
          signal: this.stop.signal,
          bodyTimeout: this.idleTimeoutMs,
        });
        if (res.statusCode === 401 || res.statusCode === 403) {
          const refused = await refusal(res.statusCode, res.body);
          this.emit('refused', refused);
          this.emit('disconnected', refused);
          return;
        }
        if (res.statusCode !== 200) {
          await res.body.dump();
          throw new Error(`event stream answered HTTP ${res.statusCode}`);
        }
        attempt = 0;
        this.emit('connected');
        let buffer = '';
        for await (const chunk of res.body) {
          buffer += (chunk as Buffer).toString('utf8');
          for (let end = buffer.indexOf('\n\n'); end >= 0; end = buffer.indexOf('\n\n')) {
            const frame = buffer.slice(0, end);
            buffer = buffer.slice(end + 2);
            this.dispatch(frame);
          }
        }
        error = new Error('event stream ended');
      } catch (err) {
        error = err as Error;
      }
      this.emit('disconnected', error);
      if (this.stop.signal.aborted) return;
      await sleepUnlessAborted(backoffDelay(attempt + 1), this.stop.signal);
    }
  }

  private dispatch(frame: string): void {
    let event = 'message';
    let data = '';
    for (const line of frame.split('\n')) {
      if (line.startsWith('event:')) event = line.slice(6).trim();
      else if (line.startsWith('data:')) data += line.slice(5).trim();
    }
    if (!data) return; // a comment (heartbeat) or retry hint
    try {
      this.emit('event', { event, data: JSON.parse(data) });
    } catch {
      // Not JSON: not from a sidecar we understand. Treat the stream as broken.
      this.emit('event', { event: 'flush', data: { reason: 'unreadable event' } });
    }
  }
}
