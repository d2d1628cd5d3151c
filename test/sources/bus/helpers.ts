import { randomBytes, randomUUID } from 'node:crypto';
import type { EventEmitter } from 'node:events';
import { connect as natsConnect } from '@nats-io/transport-node';
import { jetstreamManager } from '@nats-io/jetstream';
import { Redis } from 'ioredis';
import pino from 'pino';
import type { Bus, BusCursor, BusEntry, BusKind, BusSubscription, StreamState } from '../../../src/sources/bus/bus.js';
import { NatsBus, type NatsBusOptions } from '../../../src/sources/bus/nats.js';
import { RedisBus, type RedisBusOptions } from '../../../src/sources/bus/redis.js';
import type { ChangeEvent } from '../../../src/contract/change-event.js';

export const NATS_PORT = Number(process.env.TEST_NATS_PORT ?? 4222);
export const REDIS_PORT = Number(process.env.TEST_REDIS_PORT ?? 6379);
export const KINDS: BusKind[] = ['nats', 'redis'];
export const silent = pino({ level: 'silent' });
/** Quick reconnects, so tests wait on events rather than on the production backoff. */
export const FAST_BACKOFF = { minMs: 20, maxMs: 200 };

export const uniqueStream = (prefix = 'mst') => `${prefix}_${process.pid}_${randomBytes(4).toString('hex')}`;

export function makeBus(
  kind: BusKind,
  stream: string,
  options: { port?: number; nats?: Partial<NatsBusOptions>; redis?: Partial<RedisBusOptions> } = {},
): Bus {
  if (kind === 'nats') {
    return new NatsBus({ servers: `127.0.0.1:${options.port ?? NATS_PORT}`, stream, backoff: FAST_BACKOFF, ...options.nats });
  }
  return new RedisBus({ host: '127.0.0.1', port: options.port ?? REDIS_PORT, stream, backoff: FAST_BACKOFF, ...options.redis });
}

/** Direct server access for fault injection and clean-up, outside the code under test. */
export class Admin {
  private constructor(
    readonly kind: BusKind,
    readonly stream: string,
    private readonly port: number,
  ) {}

  static for(kind: BusKind, stream: string, port = kind === 'nats' ? NATS_PORT : REDIS_PORT): Admin {
    return new Admin(kind, stream, port);
  }

  private async nats<T>(fn: (jsm: Awaited<ReturnType<typeof jetstreamManager>>, nc: Awaited<ReturnType<typeof natsConnect>>) => Promise<T>): Promise<T> {
    const nc = await natsConnect({ servers: `127.0.0.1:${this.port}` });
    try {
      return await fn(await jetstreamManager(nc), nc);
    } finally {
      await nc.close();
    }
  }

  private async redis<T>(fn: (r: Redis) => Promise<T>): Promise<T> {
    const r = new Redis({ host: '127.0.0.1', port: this.port, lazyConnect: true, protocol: 2 });
    await r.connect();
    try {
      return await fn(r);
    } finally {
      r.disconnect();
    }
  }

  private get keyTag(): string {
    return `{${this.stream}}`;
  }

  /** Removes everything kept so far; sequences go on (NATS purge, Redis XTRIM to 0). */
  trimAll(): Promise<unknown> {
    if (this.kind === 'nats') return this.nats((jsm) => jsm.streams.purge(this.stream));
    return this.redis((r) => r.xtrim(`${this.keyTag}:stream`, 'MAXLEN', 0));
  }

  /** Deletes the stream (and, for Redis, its counter and epoch): the next publish starts a new one. */
  async deleteStream(): Promise<void> {
    if (this.kind === 'nats') {
      await this.nats((jsm) => jsm.streams.delete(this.stream).catch(() => false));
      return;
    }
    await this.redis(async (r) => {
      const keys = [`${this.keyTag}:stream`, `${this.keyTag}:seq`, `${this.keyTag}:epoch`];
      let cursor = '0';
      do {
        const [next, found] = await r.scan(cursor, 'MATCH', `${this.keyTag}:dedupe:*`, 'COUNT', 1000);
        cursor = next;
        keys.push(...found);
      } while (cursor !== '0');
      await r.del(...keys);
    });
  }

  /** Writes an entry that is not a memory-sync message but takes its place in the sequence. */
  async writeMalformed(body: string): Promise<void> {
    if (this.kind === 'nats') {
      await this.nats(async (_jsm, nc) => {
        const { jetstream } = await import('@nats-io/jetstream');
        await jetstream(nc).publish(`${this.stream}.change`, body);
      });
      return;
    }
    await this.redis(async (r) => {
      const epoch = await r.get(`${this.keyTag}:epoch`);
      const seq = await r.incr(`${this.keyTag}:seq`);
      await r.xadd(`${this.keyTag}:stream`, '*', 'seq', seq, 'epoch', epoch ?? 'none', 'id', randomUUID(), 'body', body);
    });
  }

  /** Redis only: an entry with none of our fields, as another application might write. */
  writeForeign(): Promise<unknown> {
    return this.redis((r) => r.xadd(`${this.keyTag}:stream`, '*', 'hello', 'world'));
  }
}

let txid = 1000;
/** A valid change event with a fresh txid. */
export function change(over: Partial<ChangeEvent> = {}): ChangeEvent {
  return {
    ms: 2,
    model: 'Memory',
    op: 'INSERT',
    scope: 'rows',
    fields: ['id', 'personalityId'],
    rows: [[randomUUID(), randomUUID()]],
    gone: [],
    txid: String(txid++),
    ts: performance.timeOrigin + performance.now(),
    chunk: 1,
    chunks: 1,
    ...over,
  };
}

/** Collects a subscription's entries and lets a test await the n-th one. */
export class Collector {
  readonly entries: BusEntry[] = [];
  ended: string | undefined;
  private waiters: Array<{ n: number; resolve: () => void }> = [];
  private endWaiters: Array<(r: string) => void> = [];
  sub: BusSubscription | undefined;

  static async on(bus: Bus, from?: { seq: number; position: string }): Promise<Collector> {
    const c = new Collector();
    const start: BusCursor = from ?? (await bus.state().then((s: StreamState) => ({ seq: s.lastSeq, position: s.lastPosition })));
    c.sub = await bus.subscribe(start, {
      entry: (e) => {
        c.entries.push(e);
        c.waiters = c.waiters.filter((w) => (c.entries.length >= w.n ? (w.resolve(), false) : true));
      },
      end: (reason) => {
        c.ended = reason;
        for (const w of c.endWaiters) w(reason);
      },
    });
    return c;
  }

  /** Resolves once `n` entries in all have arrived. */
  count(n: number): Promise<void> {
    if (this.entries.length >= n) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push({ n, resolve }));
  }

  end(): Promise<string> {
    if (this.ended !== undefined) return Promise.resolve(this.ended);
    return new Promise((resolve) => this.endWaiters.push(resolve));
  }

  get last(): { seq: number; position: string } {
    const e = this.entries.at(-1)!;
    return { seq: e.seq!, position: e.position };
  }

  close(): Promise<void> {
    return this.sub?.close() ?? Promise.resolve();
  }
}

/** Resolves with the arguments of the next `event` that passes `test`. */
export function next<E extends EventEmitter, A extends unknown[] = unknown[]>(emitter: E, event: string, test: (...args: A) => boolean = () => true): Promise<A> {
  return new Promise((resolve) => {
    const on = (...args: unknown[]) => {
      if (!test(...(args as A))) return;
      (emitter as EventEmitter).off(event, on);
      resolve(args as A);
    };
    (emitter as EventEmitter).on(event, on);
  });
}
