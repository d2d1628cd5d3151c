import { EventEmitter, once } from 'node:events';
import { randomUUID } from 'node:crypto';
import { Redis, type RedisOptions } from 'ioredis';
import { z } from 'zod';
import { DatabaseUnavailableError, PermanentError } from '../../contract/errors.js';
import { parseOptions } from '../../validation/parse.js';
import { timerMs } from '../../contract/primitives.js';
import { backoffDelay, DEFAULT_BACKOFF } from '../backoff.js';
import { busMessageId, parseBusMessage, type BusMessage } from '../../contract/bus-message.js';
import { DEFAULT_STREAM, streamName, type Bus, type BusCommonOptions, type BusCursor, type BusEntry, type BusEvents, type BusSubscribeHandlers, type BusSubscription, type PublishResult, type StreamState } from './bus.js';

export interface RedisBusOptions extends BusCommonOptions {
  host: string;
  /** @defaultValue 6379 */
  port?: number;
  /** @defaultValue 0 */
  db?: number;
  /**
   * Key prefix: the stream is `{<stream>}:stream`, with `{<stream>}:seq`,
   * `{<stream>}:epoch` and `{<stream>}:dedupe:<id>` beside it (one hash tag,
   * so a cluster keeps them in one slot for the publish script).
   * @defaultValue "memory_sync"
   */
  stream?: string;
  username?: string;
  password?: string;
  /** @defaultValue false */
  tls?: boolean;
  /**
   * Entries kept (`XADD MAXLEN ~`, so Redis trims in whole nodes, keeping a
   * little more). A subscriber away for longer than this many changes flushes.
   * @defaultValue 100000 — at 100 changes/s, 16 minutes of absence; tens of
   * MB at typical event sizes.
   */
  maxLength?: number;
  /**
   * How long a message id is remembered to drop a second relay's copy. One
   * key per message lives this long: at 1,000 changes/s that is 120k keys
   * (≈ 15 MB).
   * @defaultValue 120000 — JetStream's default window; it only needs to
   * outlast a relay's publish retries.
   */
  dedupeTtlMs?: number;
  /**
   * `XREAD BLOCK` time. A read that has not answered this long plus 2 s means
   * a dead connection, which is then replaced.
   * @defaultValue 5000 — a half-open connection is noticed within ~7 s.
   */
  blockMs?: number;
  /**
   * Entries per `XREAD`.
   * @defaultValue 512 — a catch-up after an outage takes few round trips.
   */
  readCount?: number;
  /**
   * Timeout for ordinary commands (publish, state); a connection that has
   * not answered this long is replaced.
   * @defaultValue 5000 — a relay retries after it.
   */
  commandTimeoutMs?: number;
}

const optionsSchema = z.object({
  host: z.string().min(1),
  port: z.number().int().min(1).max(65535).default(6379),
  db: z.number().int().min(0).default(0),
  stream: streamName.default(DEFAULT_STREAM),
  username: z.string().optional(),
  password: z.string().optional(),
  tls: z.boolean().default(false),
  maxLength: z.number().int().min(1).default(100_000),
  dedupeTtlMs: timerMs(1000).default(120_000),
  blockMs: timerMs(1).default(5_000),
  readCount: z.number().int().min(1).max(100_000).default(512),
  commandTimeoutMs: timerMs(1).default(5_000),
  connectTimeoutMs: timerMs(1).default(5_000),
  backoff: z.object({ minMs: timerMs(0), maxMs: timerMs(1) }).default(DEFAULT_BACKOFF),
});

type Resolved = z.infer<typeof optionsSchema>;

/**
 * Publish, atomically: drop a message whose id was seen within the TTL;
 * (re)start the epoch and counter when the stream, counter or epoch is
 * missing (a deleted stream, a Redis that lost its data); take the next
 * sequence; append. Redis stream ids are times, not contiguous numbers, so
 * the sequence travels in the entry (`seq`), with the epoch it belongs to.
 *
 * KEYS: stream, counter, epoch, dedupe key.
 * ARGV: dedupe TTL ms, MAXLEN, a fresh epoch (used only on a restart), message id, body.
 * Returns {1, seq} for a new entry, {0, seq of the first copy} for a duplicate.
 */
const PUBLISH_LUA = `
local first = redis.call('GET', KEYS[4])
if first then return {0, tonumber(first)} end
local epoch = redis.call('GET', KEYS[3])
local counter = redis.call('GET', KEYS[2])
if (not epoch) or (not counter) or redis.call('EXISTS', KEYS[1]) == 0 then
  epoch = ARGV[3]
  redis.call('SET', KEYS[3], epoch)
  redis.call('SET', KEYS[2], 0)
end
local seq = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[4], seq, 'PX', ARGV[1])
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 'seq', seq, 'epoch', epoch, 'id', ARGV[4], 'body', ARGV[5])
return {1, seq}
`;

/** Fields of an entry the publish script wrote. */
const entryFields = z.object({
  seq: z.string().regex(/^[1-9]\d{0,15}$/).transform(Number),
  epoch: z.string().min(1),
  id: z.string(),
  body: z.string(),
});

function fieldsToObject(fields: unknown): Record<string, string> {
  const out: Record<string, string> = {};
  if (!Array.isArray(fields)) return out;
  for (let i = 0; i + 1 < fields.length; i += 2) out[String(fields[i])] = String(fields[i + 1]);
  return out;
}

function readEntry(id: string, fields: unknown): BusEntry {
  const parsed = entryFields.safeParse(fieldsToObject(fields));
  if (!parsed.success) {
    const raw = JSON.stringify(fields);
    return {
      seq: null,
      position: id,
      epoch: null,
      parsed: { ok: false, reason: 'stream entry is not a memory-sync message (no seq/epoch/body)', sample: raw.slice(0, 200), bytes: Buffer.byteLength(raw) },
    };
  }
  const { seq, epoch, body } = parsed.data;
  return { seq, position: id, epoch, parsed: parseBusMessage(body) };
}

const PERMANENT = /WRONGPASS|NOAUTH|NOPERM|invalid password|invalid username/i;

function classify(err: unknown, what: string): Error {
  const message = (err as Error).message ?? String(err);
  if (PERMANENT.test(message)) {
    return new PermanentError(`Redis refused ${what}: ${message} (check the user and password in MEMORY_SYNC_BUS_URL)`, undefined, { cause: err });
  }
  return new DatabaseUnavailableError(`Redis ${what} failed: ${message}`, { cause: err });
}

/**
 * Redis Streams. A command connection (publish, state) that reconnects on
 * its own with our backoff and fails fast while down, and one dedicated
 * connection per subscription for `XREAD BLOCK` (a blocking read would
 * hold up everything else on a shared one).
 */
export class RedisBus extends EventEmitter<BusEvents> implements Bus {
  readonly kind = 'redis' as const;
  readonly stream: string;
  /** The keys this bus uses. */
  readonly keys: { stream: string; counter: string; epoch: string; dedupePrefix: string };
  private readonly o: Resolved;
  private cmd: Redis | undefined;
  private ready = false;
  private closed = false;
  private opening: Promise<void> | undefined;
  private readonly readers = new Set<Redis>();

  constructor(options: RedisBusOptions) {
    super();
    this.o = parseOptions(optionsSchema, options, 'redis');
    this.stream = this.o.stream;
    const tag = `{${this.stream}}`;
    this.keys = { stream: `${tag}:stream`, counter: `${tag}:seq`, epoch: `${tag}:epoch`, dedupePrefix: `${tag}:dedupe:` };
  }

  private baseOptions(): RedisOptions {
    const o = this.o;
    return {
      host: o.host,
      port: o.port,
      db: o.db,
      username: o.username,
      password: o.password,
      tls: o.tls ? {} : undefined,
      protocol: 2, // RESP2 reply shapes for XREAD/XINFO, whatever the server prefers
      lazyConnect: true,
      connectTimeout: o.connectTimeoutMs,
      enableOfflineQueue: false, // fail fast while down: callers own the retry
      autoResendUnfulfilledCommands: false,
      maxRetriesPerRequest: 0, // a command in flight when the connection drops fails at once
      disableClientInfo: true,
    };
  }

  async connect(): Promise<void> {
    if (this.closed) throw new DatabaseUnavailableError('bus closed');
    const cmd = this.cmd;
    if (cmd && cmd.status !== 'end') {
      if (this.ready) return;
      try {
        await once(this, 'reconnect', { signal: AbortSignal.timeout(this.o.connectTimeoutMs) });
      } catch {
        throw new DatabaseUnavailableError(`Redis not reconnected within ${this.o.connectTimeoutMs} ms`);
      }
      return;
    }
    this.opening ??= this.open().finally(() => {
      this.opening = undefined;
    });
    await this.opening;
  }

  private async open(): Promise<void> {
    let everReady = false;
    const cmd = new Redis({
      ...this.baseOptions(),
      connectionName: 'memory-sync-bus',
      commandTimeout: this.o.commandTimeoutMs,
      // A reply this late means a dead (half-open) socket: destroy it, and the client reconnects.
      socketTimeout: this.o.commandTimeoutMs,
      // Before the first ready the caller's loop retries; after it, the client reconnects itself.
      retryStrategy: (times) => (everReady && !this.closed ? backoffDelay(times, this.o.backoff) : null),
      scripts: { msPublish: { lua: PUBLISH_LUA, numberOfKeys: 4 } },
    });
    // Errors surface through command rejections and close events; a refused
    // AUTH only as an error event, before connect() rejects with "Connection is closed".
    let lastError: Error | undefined;
    cmd.on('error', (err: Error) => (lastError = err));
    try {
      await cmd.connect();
    } catch (err) {
      cmd.disconnect();
      throw classify(lastError ?? err, 'the connection');
    }
    if (this.closed) {
      cmd.disconnect();
      throw new DatabaseUnavailableError('bus closed');
    }
    everReady = true;
    this.cmd = cmd;
    this.ready = true;
    cmd.on('close', () => {
      if (this.cmd !== cmd || !this.ready) return;
      this.ready = false;
      if (!this.closed) this.emit('disconnect', `connection to Redis ${this.o.host}:${this.o.port} closed`);
    });
    cmd.on('ready', () => {
      if (this.cmd !== cmd || this.ready) return;
      this.ready = true;
      this.emit('reconnect');
    });
  }

  private command(): Redis {
    if (!this.cmd || !this.ready) throw new DatabaseUnavailableError('Redis not connected');
    return this.cmd;
  }

  /** Streams appear with their first entry; the publish script sets up the rest. */
  async ensureStream(): Promise<void> {}

  async publish(message: BusMessage): Promise<PublishResult> {
    const cmd = this.command() as Redis & {
      msPublish(...args: Array<string | number>): Promise<[number, number]>;
    };
    const id = busMessageId(message);
    const k = this.keys;
    const [added, seq] = await cmd.msPublish(k.stream, k.counter, k.epoch, `${k.dedupePrefix}${id}`, this.o.dedupeTtlMs, this.o.maxLength, randomUUID(), id, JSON.stringify(message));
    return { seq, duplicate: added === 0 };
  }

  async state(): Promise<StreamState> {
    const k = this.keys;
    const replies = await this.command().multi().exists(k.stream).get(k.epoch).get(k.counter).xinfo('STREAM', k.stream).exec();
    if (!replies) throw new DatabaseUnavailableError('Redis transaction aborted');
    const [exists, epoch, counter, info] = replies;
    if (exists?.[0] || epoch?.[0] || counter?.[0]) throw exists?.[0] ?? epoch?.[0] ?? counter?.[0];
    if (exists?.[1] === 0) return { epoch: null, firstSeq: 1, lastSeq: 0, lastPosition: '0-0' };
    if (info?.[0]) throw info[0];
    const fields = fieldsToObjectRaw(info?.[1]);
    const lastPosition = String(fields['last-generated-id'] ?? '0-0');
    // Epoch or counter gone with the stream still there: the next publish starts a new epoch at 1.
    if (typeof epoch?.[1] !== 'string' || typeof counter?.[1] !== 'string') return { epoch: null, firstSeq: 1, lastSeq: 0, lastPosition };
    const lastSeq = Number(counter[1]);
    const first = fields['first-entry'];
    let firstSeq = lastSeq + 1;
    if (Array.isArray(first)) {
      const entry = readEntry(String(first[0]), first[1]);
      // An unreadable first entry proves nothing: only a subscriber that has seen everything may resume.
      if (entry.seq !== null && entry.epoch === epoch[1]) firstSeq = entry.seq;
    }
    return { epoch: epoch[1], firstSeq, lastSeq, lastPosition };
  }

  async subscribe(after: BusCursor, handlers: BusSubscribeHandlers): Promise<BusSubscription> {
    const o = this.o;
    const reader = new Redis({
      ...this.baseOptions(),
      connectionName: 'memory-sync-subscriber',
      // The read answers within blockMs; silence beyond that means a dead connection.
      commandTimeout: o.blockMs + 2_000,
      socketTimeout: o.blockMs + 2_000,
      retryStrategy: () => null, // a broken subscription is replaced, not resumed underneath us
    });
    let lastError: Error | undefined;
    reader.on('error', (err: Error) => (lastError = err));
    try {
      await reader.connect();
    } catch (err) {
      reader.disconnect();
      throw classify(lastError ?? err, 'the subscriber connection');
    }
    this.readers.add(reader);
    let open = true;
    const end = (reason: string) => {
      if (!open) return;
      open = false;
      this.readers.delete(reader);
      reader.disconnect();
      handlers.end(reason);
    };
    reader.on('close', () => end('subscriber connection to Redis closed'));
    const key = this.keys.stream;
    void (async () => {
      let position = after.position;
      while (open) {
        let reply: unknown;
        try {
          reply = await reader.xread('COUNT', o.readCount, 'BLOCK', o.blockMs, 'STREAMS', key, position);
        } catch (err) {
          end(`XREAD failed: ${(err as Error).message}`);
          return;
        }
        if (!Array.isArray(reply)) continue;
        const entries = (reply[0] as [string, Array<[string, unknown]>] | undefined)?.[1] ?? [];
        for (const [id, fields] of entries) {
          if (!open) return;
          position = id;
          try {
            handlers.entry(readEntry(id, fields));
          } catch {
            // a throwing handler must not stop the read loop; BusSource logs its own
          }
        }
      }
    })();
    return {
      close: async () => {
        open = false;
        this.readers.delete(reader);
        reader.disconnect();
      },
    };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.opening?.catch(() => {});
    for (const r of this.readers) r.disconnect();
    this.readers.clear();
    const cmd = this.cmd;
    this.cmd = undefined;
    this.ready = false;
    if (cmd) await cmd.quit().catch(() => cmd.disconnect());
  }
}

/** XINFO STREAM's flat [name, value, ...] reply as an object, values untouched. */
function fieldsToObjectRaw(reply: unknown): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  if (!Array.isArray(reply)) return out;
  for (let i = 0; i + 1 < reply.length; i += 2) out[String(reply[i])] = reply[i + 1];
  return out;
}
