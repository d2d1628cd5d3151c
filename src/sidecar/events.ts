import type { ServerResponse } from 'node:http';
import type { InvalidationInfo } from '../client/memory-sync.js';
import type { SidecarEventName } from '../contract/wire.js';

export interface EventHubOptions {
  /** A subscriber that lets this much output pile up is cut off (it reconnects and must flush). */
  maxBufferedBytes?: number;
  heartbeatMs?: number;
}

/**
 * Fans invalidations out to /v1/events subscribers as server-sent events.
 * Each event is serialized once for all subscribers.
 */
export class EventHub {
  private readonly streams = new Set<ServerResponse>();
  private readonly maxBuffered: number;
  private readonly heartbeat: NodeJS.Timeout;

  constructor(options: EventHubOptions = {}) {
    this.maxBuffered = options.maxBufferedBytes ?? 1024 * 1024;
    this.heartbeat = setInterval(() => this.write(': ping\n\n'), options.heartbeatMs ?? 15_000);
    this.heartbeat.unref();
  }

  get size(): number {
    return this.streams.size;
  }

  /** Takes over a hijacked response; `state` is the first event it receives. */
  add(res: ServerResponse, state: unknown): void {
    res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache, no-transform',
      connection: 'keep-alive',
      'x-accel-buffering': 'no',
    });
    res.write(`retry: 1000\n${frame('state', state)}`);
    this.streams.add(res);
    res.on('close', () => this.streams.delete(res));
  }

  send(name: SidecarEventName, data: unknown): void {
    if (this.streams.size) this.write(frame(name, data));
  }

  invalidation({ event, action, lagMs }: InvalidationInfo): void {
    if (this.streams.size) this.send('invalidation', { ...event, action, lagMs });
  }

  /** Ends every stream: server.close() would otherwise wait for them forever. */
  close(): void {
    clearInterval(this.heartbeat);
    for (const res of this.streams) res.end();
    this.streams.clear();
  }

  private write(chunk: string): void {
    for (const res of this.streams) {
      if (res.writableLength > this.maxBuffered) {
        this.streams.delete(res);
        res.destroy();
        continue;
      }
      res.write(chunk);
    }
  }
}

function frame(name: SidecarEventName, data: unknown): string {
  return `event: ${name}\ndata: ${JSON.stringify(data)}\n\n`;
}
