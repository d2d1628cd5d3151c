import { EventEmitter, once } from 'node:events';
import { AuthorizationError, PermissionViolationError, UserAuthenticationExpiredError, connect, nanos, type NatsConnection } from '@nats-io/transport-node';
import {
  AckPolicy,
  DeliverPolicy,
  DiscardPolicy,
  JetStreamApiCodes,
  JetStreamApiError,
  RetentionPolicy,
  StorageType,
  jetstream,
  jetstreamManager,
  type ConsumerMessages,
  type JetStreamClient,
  type JetStreamManager,
} from '@nats-io/jetstream';
import { z } from 'zod';
import { DatabaseUnavailableError, PermanentError } from '../../contract/errors.js';
import { parseOptions } from '../../validation/parse.js';
import { timerMs } from '../../contract/primitives.js';
import { backoffDelay, DEFAULT_BACKOFF } from '../backoff.js';
import { busMessageId, parseBusMessage, type BusMessage } from '../../contract/bus-message.js';
import { DEFAULT_STREAM, streamName, type Bus, type BusCommonOptions, type BusCursor, type BusEvents, type BusSubscribeHandlers, type BusSubscription, type PublishResult, type StreamState } from './bus.js';

export interface NatsBusOptions extends BusCommonOptions {
  /** `host:port`, or several for a cluster. */
  servers: string | string[];
  /**
   * JetStream stream name; its subjects are `<stream>.change`, `.barrier`, `.invalid`, `.gap`.
   * @defaultValue "memory_sync"
   */
  stream?: string;
  user?: string;
  pass?: string;
  /** @defaultValue false — plain TCP, as on a private network. */
  tls?: boolean;
  /**
   * Stream limit on messages kept (oldest dropped first). A subscriber away
   * for longer than this many changes flushes instead of resuming.
   * @defaultValue 100000 — at 100 changes/s, 16 minutes of absence; a few MB
   * at typical event sizes (≈ 300 bytes, at most 8 KB).
   */
  maxMessages?: number;
  /**
   * Stream limit on message age.
   * @defaultValue 86400000 (24 h) — longer than any deploy or blip worth
   * resuming; older messages serve nobody.
   */
  maxAgeMs?: number;
  /**
   * JetStream's duplicate window: a message id seen within it is dropped.
   * Two relays publish the same change within milliseconds; the window only
   * needs to outlast a relay's publish retries.
   * @defaultValue 120000 — JetStream's own default.
   */
  duplicateWindowMs?: number;
  /**
   * Where the stream is kept.
   * @defaultValue "file" — survives a NATS restart, so subscribers resume
   * across it; "memory" loses the stream, and subscribers flush.
   */
  storage?: 'file' | 'memory';
  /**
   * How long a publish waits for the stream's acknowledgement.
   * @defaultValue 5000 — a relay retries after it.
   */
  publishTimeoutMs?: number;
  /**
   * Client pings; two unanswered ones mean a dead connection.
   * @defaultValue 5000 — a half-open connection is noticed within ~10–15 s
   * (the client's default, 2 minutes, would leave caches serving stale data that long).
   */
  pingIntervalMs?: number;
  /** Client name shown by the server's monitoring. @defaultValue "memory-sync" */
  name?: string;
}

const optionsSchema = z.object({
  servers: z.union([z.string().min(1), z.array(z.string().min(1)).min(1)]),
  stream: streamName.default(DEFAULT_STREAM),
  user: z.string().optional(),
  pass: z.string().optional(),
  tls: z.boolean().default(false),
  maxMessages: z.number().int().min(1).default(100_000),
  maxAgeMs: timerMs(1000).default(86_400_000),
  duplicateWindowMs: timerMs(1000).default(120_000),
  storage: z.enum(['file', 'memory']).default('file'),
  publishTimeoutMs: timerMs(1).default(5_000),
  pingIntervalMs: timerMs(100).default(5_000),
  connectTimeoutMs: timerMs(1).default(5_000),
  name: z.string().default('memory-sync'),
  backoff: z.object({ minMs: timerMs(0), maxMs: timerMs(1) }).default(DEFAULT_BACKOFF),
});

type Resolved = z.infer<typeof optionsSchema>;

/** JetStream's "stream name already in use" (10058; the client names no constant for it). */
const STREAM_NAME_IN_USE = 10058;

/** Consumers outlive a lost connection this long, then the server removes them. */
const CONSUMER_INACTIVE_MS = 60_000;

function isApiError(err: unknown, code: number): boolean {
  return err instanceof JetStreamApiError && err.code === code;
}

/** Bad credentials or missing permissions: a retry cannot fix them. */
function toPermanent(err: unknown): PermanentError | undefined {
  if (err instanceof AuthorizationError || err instanceof UserAuthenticationExpiredError || err instanceof PermissionViolationError) {
    return new PermanentError(`NATS refused the connection: ${err.message} (check the user and password in MEMORY_SYNC_BUS_URL)`, undefined, { cause: err });
  }
  return undefined;
}

/**
 * NATS JetStream. One connection (the client reconnects on its own, with
 * our backoff); the stream is created when missing. Sequences are the
 * stream's: contiguous, never reused, and a dedupe hit takes none.
 *
 * Subscriptions use an ephemeral consumer we create at `after.seq + 1`
 * (no acks, memory storage) rather than the client's ordered consumer: the
 * ordered consumer recreates itself after the stream is deleted and would
 * skip the new stream's first messages silently. Ours dies with its stream,
 * the subscription ends, and the subscriber re-checks the stream's epoch.
 */
export class NatsBus extends EventEmitter<BusEvents> implements Bus {
  readonly kind = 'nats' as const;
  readonly stream: string;
  private readonly o: Resolved;
  private nc: NatsConnection | undefined;
  private js: JetStreamClient | undefined;
  private jsm: JetStreamManager | undefined;
  private connected = false;
  private reconnectAttempt = 0;
  private closed = false;
  private opening: Promise<void> | undefined;

  constructor(options: NatsBusOptions) {
    super();
    this.o = parseOptions(optionsSchema, options, 'nats');
    this.stream = this.o.stream;
  }

  /** The connection, for tests and tools; undefined while not connected. */
  get connection(): NatsConnection | undefined {
    return this.nc;
  }

  async connect(): Promise<void> {
    if (this.closed) throw new DatabaseUnavailableError('bus closed');
    const nc = this.nc;
    if (nc && !nc.isClosed()) {
      if (this.connected) return;
      // The client is reconnecting on its own: wait for it, bounded.
      try {
        await once(this, 'reconnect', { signal: AbortSignal.timeout(this.o.connectTimeoutMs) });
      } catch {
        throw new DatabaseUnavailableError(`NATS not reconnected within ${this.o.connectTimeoutMs} ms`);
      }
      return;
    }
    this.opening ??= this.open().finally(() => {
      this.opening = undefined;
    });
    await this.opening;
  }

  private async open(): Promise<void> {
    const o = this.o;
    let nc: NatsConnection;
    try {
      nc = await connect({
        servers: o.servers,
        user: o.user,
        pass: o.pass,
        tls: o.tls ? {} : undefined,
        name: o.name,
        timeout: o.connectTimeoutMs,
        reconnect: true,
        maxReconnectAttempts: -1, // never give up: the subscriber's caches wait on it
        reconnectDelayHandler: () => backoffDelay(++this.reconnectAttempt, o.backoff),
        pingInterval: o.pingIntervalMs,
        maxPingOut: 2,
      });
    } catch (err) {
      throw toPermanent(err) ?? new DatabaseUnavailableError(`NATS connect failed: ${(err as Error).message}`, { cause: err });
    }
    if (this.closed) {
      await nc.close().catch(() => {});
      throw new DatabaseUnavailableError('bus closed');
    }
    try {
      this.jsm = await jetstreamManager(nc, { timeout: o.connectTimeoutMs });
    } catch (err) {
      await nc.close().catch(() => {});
      // JetStream disabled on the server is a configuration error, not an outage.
      if ((err as Error).name === 'JetStreamNotEnabled' || /not enabled/i.test((err as Error).message)) {
        throw new PermanentError(`NATS at ${String(o.servers)} has JetStream disabled (start nats-server with -js)`, undefined, { cause: err });
      }
      throw toPermanent(err) ?? new DatabaseUnavailableError(`JetStream unavailable: ${(err as Error).message}`, { cause: err });
    }
    if (this.closed) {
      await nc.close().catch(() => {});
      throw new DatabaseUnavailableError('bus closed');
    }
    this.js = jetstream(nc, { timeout: o.publishTimeoutMs });
    this.nc = nc;
    this.connected = true;
    this.reconnectAttempt = 0;
    void this.watchStatus(nc);
    void nc
      .closed()
      .then((err) => {
        if (this.nc !== nc) return;
        this.nc = undefined;
        this.connected = false;
        if (!this.closed) this.emit('disconnect', `NATS connection closed${err ? `: ${err.message}` : ''}`);
      })
      .catch(() => {});
  }

  private async watchStatus(nc: NatsConnection): Promise<void> {
    try {
      for await (const s of nc.status()) {
        if (this.nc !== nc) return;
        if (s.type === 'disconnect') {
          if (!this.connected) continue;
          this.connected = false;
          this.emit('disconnect', `disconnected from NATS ${s.server}`);
        } else if (s.type === 'reconnect') {
          this.connected = true;
          this.reconnectAttempt = 0;
          this.emit('reconnect');
        }
      }
    } catch {
      // the iterator ends with the connection
    }
  }

  private api(): { js: JetStreamClient; jsm: JetStreamManager } {
    if (!this.js || !this.jsm || !this.nc || this.nc.isClosed()) throw new DatabaseUnavailableError('NATS not connected');
    return { js: this.js, jsm: this.jsm };
  }

  async ensureStream(): Promise<void> {
    const { jsm } = this.api();
    try {
      await jsm.streams.info(this.stream);
      return;
    } catch (err) {
      if (!isApiError(err, JetStreamApiCodes.StreamNotFound)) throw err;
    }
    const o = this.o;
    try {
      await jsm.streams.add({
        name: this.stream,
        subjects: [`${this.stream}.>`],
        retention: RetentionPolicy.Limits,
        discard: DiscardPolicy.Old,
        storage: o.storage === 'file' ? StorageType.File : StorageType.Memory,
        max_msgs: o.maxMessages,
        max_age: nanos(o.maxAgeMs),
        duplicate_window: nanos(o.duplicateWindowMs),
        num_replicas: 1,
      });
    } catch (err) {
      // Another relay or subscriber created it first, maybe with other limits: use it as it is.
      if (!isApiError(err, STREAM_NAME_IN_USE)) throw err;
    }
  }

  async publish(message: BusMessage): Promise<PublishResult> {
    const { js } = this.api();
    const ack = await js.publish(`${this.stream}.${message.kind}`, JSON.stringify(message), {
      msgID: busMessageId(message),
      timeout: this.o.publishTimeoutMs,
      expect: { streamName: this.stream },
    });
    return { seq: ack.seq, duplicate: ack.duplicate };
  }

  async state(): Promise<StreamState> {
    const { jsm } = this.api();
    try {
      const info = await jsm.streams.info(this.stream);
      const { first_seq, last_seq, messages } = info.state;
      return {
        epoch: info.created,
        firstSeq: messages === 0 ? last_seq + 1 : first_seq,
        lastSeq: last_seq,
        lastPosition: String(last_seq),
      };
    } catch (err) {
      if (isApiError(err, JetStreamApiCodes.StreamNotFound)) return { epoch: null, firstSeq: 1, lastSeq: 0, lastPosition: '0' };
      throw err;
    }
  }

  async subscribe(after: BusCursor, handlers: BusSubscribeHandlers): Promise<BusSubscription> {
    const { js, jsm } = this.api();
    const info = await jsm.consumers.add(this.stream, {
      ack_policy: AckPolicy.None,
      deliver_policy: DeliverPolicy.StartSequence,
      opt_start_seq: after.seq + 1,
      inactive_threshold: nanos(CONSUMER_INACTIVE_MS),
      mem_storage: true,
      num_replicas: 1,
    });
    const consumer = await js.consumers.get(this.stream, info.name);
    let open = true;
    let messages: ConsumerMessages | undefined;
    const end = (reason: string) => {
      if (!open) return;
      open = false;
      messages?.stop();
      handlers.end(reason);
    };
    messages = await consumer.consume({
      max_messages: 512,
      callback: (m) => {
        if (!open) return;
        try {
          handlers.entry({ seq: m.seq, position: String(m.seq), epoch: null, parsed: parseBusMessage(m.string()) });
        } catch {
          // a throwing handler must not stop the consumer; BusSource logs its own
        }
      },
    });
    const watched = messages;
    void (async () => {
      try {
        for await (const s of watched.status()) {
          if (s.type === 'consumer_deleted') end(`consumer deleted: ${s.description}`);
          else if (s.type === 'consumer_not_found') end('consumer not found');
          else if (s.type === 'stream_not_found') end('stream not found');
          else if (s.type === 'heartbeats_missed' && s.count >= 2) end(`${s.count} consumer heartbeats missed`);
        }
      } catch {
        // ends with the subscription
      }
    })();
    void watched
      .closed()
      .then((err) => {
        if (err) end(`consumer stopped: ${(err as Error).message}`);
      })
      .catch(() => {});
    return {
      close: async () => {
        open = false;
        watched.stop();
        // Best effort: the server removes it after CONSUMER_INACTIVE_MS anyway.
        if (this.connected) await jsm.consumers.delete(this.stream, info.name).catch(() => {});
      },
    };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const nc = this.nc;
    this.nc = undefined;
    this.connected = false;
    await this.opening?.catch(() => {});
    if (nc) await nc.close().catch(() => {});
  }
}
