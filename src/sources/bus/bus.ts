import type { EventEmitter } from 'node:events';
import { z } from 'zod';
import type { BusMessage, ParsedBusMessage } from '../../contract/bus-message.js';
import { ConfigError } from '../../contract/errors.js';
import type { BackoffOptions } from '../backoff.js';

/*
 * Fleet mode: relays publish each change to a bus (NATS JetStream or Redis
 * Streams); every host reads the bus instead of holding a LISTEN connection.
 * This file is the engine interface and the bus URL; the messages are in
 * src/contract/bus-message.ts, the engines in nats.ts and redis.ts.
 */

// -------------------------------------------------------------- interface


/**
 * Where a stream stands. `epoch` names this incarnation of the stream (NATS:
 * its creation time; Redis: a random id written when the stream and its
 * counter start): a stream deleted and created again has a new epoch and
 * starts again at 1. Null when the stream does not exist (yet).
 */
export interface StreamState {
  epoch: string | null;
  /** First sequence still kept; lastSeq + 1 when the stream holds nothing. */
  firstSeq: number;
  /** Last sequence written; 0 before the first. */
  lastSeq: number;
  /** Engine cursor just after lastSeq (NATS: the sequence; Redis: the entry id). */
  lastPosition: string;
}

/** Where a subscription starts: just after this entry. */
export interface BusCursor {
  seq: number;
  /** Engine cursor (see StreamState.lastPosition); the engine's "start" when nothing was read. */
  position: string;
}

/** One entry as read from the stream. */
export interface BusEntry {
  /** Contiguous within an epoch; null when the entry itself is unreadable (Redis entries written by someone else). */
  seq: number | null;
  position: string;
  /** Redis stamps each entry; NATS entries carry none (the consumer dies with its stream, and the epoch is checked on resume). */
  epoch: string | null;
  parsed: ParsedBusMessage;
}

export interface PublishResult {
  /** Sequence the stream gave it, or the earlier copy's sequence; null when the engine does not say (NATS duplicates). */
  seq: number | null;
  /** The bus already had a message with this id within its window. */
  duplicate: boolean;
}

export interface BusSubscription {
  /** Stops delivery; entries in flight are dropped. Never rejects. */
  close(): Promise<void>;
}

export interface BusSubscribeHandlers {
  /** Each entry, in stream order, one at a time. */
  entry(entry: BusEntry): void;
  /** The subscription broke (connection lost, consumer or stream deleted); not called after close(). */
  end(reason: string): void;
}

export interface BusEvents {
  /** The connection was lost; the client reconnects on its own. */
  disconnect: [reason: string];
  /** The connection is back. */
  reconnect: [];
}

/**
 * One bus engine. One instance serves one role well: a relay publishes, a
 * subscriber reads; each opens the connections it needs.
 */
export interface Bus extends EventEmitter<BusEvents> {
  readonly kind: BusKind;
  /** Stream name (NATS) or key prefix (Redis). */
  readonly stream: string;
  /**
   * Resolves once connected (at once when already connected; waits for the
   * client's own reconnect otherwise). Rejects after one failed attempt: the
   * caller owns the retry loop. Bad credentials reject with a PermanentError.
   */
  connect(): Promise<void>;
  /** Creates the stream when it is missing; never changes an existing one's limits. */
  ensureStream(): Promise<void>;
  /** Publishes with busMessageId(message) as the dedupe id. */
  publish(message: BusMessage): Promise<PublishResult>;
  state(): Promise<StreamState>;
  /** Delivers every entry after `after`, then new ones as they come. */
  subscribe(after: BusCursor, handlers: BusSubscribeHandlers): Promise<BusSubscription>;
  close(): Promise<void>;
}

// ------------------------------------------------------------------ config

export type BusKind = 'nats' | 'redis';

export const DEFAULT_STREAM = 'memory_sync';

/** Stream names that are valid NATS stream names, subject tokens and Redis key parts alike. */
export const streamName = z.string().regex(/^[A-Za-z0-9_-]{1,64}$/, 'must be 1 to 64 letters, digits, _ or -');

export type BusConfig =
  | { kind: 'nats'; servers: string; stream: string; user?: string; pass?: string; tls: boolean }
  | { kind: 'redis'; host: string; port: number; db: number; stream: string; username?: string; password?: string; tls: boolean };

const port = z.coerce.number().int().min(1).max(65535);

/**
 * `MEMORY_SYNC_BUS_URL`:
 * - `nats://[user:pass@]host[:port][/stream]` (`tls://` for TLS), port 4222, stream `memory_sync`;
 * - `redis://[user:pass@]host[:port][/db][?stream=name]` (`rediss://` for TLS), port 6379, db 0.
 */
export function parseBusUrl(raw: string, variable = 'MEMORY_SYNC_BUS_URL'): BusConfig {
  const fail = (reason: string): never => {
    throw new ConfigError(variable, reason);
  };
  let u: URL;
  try {
    u = new URL(raw);
  } catch {
    return fail('is not a URL; expected nats://host:port[/stream] or redis://host:port[/db][?stream=name]');
  }
  const scheme = u.protocol.replace(/:$/, '');
  if (u.hostname === '') fail('names no host');
  const portOf = (fallback: number) => {
    if (u.port === '') return fallback;
    const p = port.safeParse(u.port);
    return p.success ? p.data : fail(`port ${u.port} is not from 1 to 65535`);
  };
  const streamOf = (value: string | null) => {
    if (value === null || value === '') return DEFAULT_STREAM;
    const s = streamName.safeParse(value);
    return s.success ? s.data : fail(`stream "${value}" ${s.error.issues[0]?.message ?? 'is invalid'}`);
  };
  const user = u.username ? decodeURIComponent(u.username) : undefined;
  const pass = u.password ? decodeURIComponent(u.password) : undefined;
  if (scheme === 'nats' || scheme === 'tls') {
    const path = u.pathname.replace(/^\/+|\/+$/g, '');
    if (path.includes('/')) fail(`path "${u.pathname}" must be at most one segment, the stream name`);
    if (u.search !== '') fail('takes no query parameters for nats:// (the stream is the path)');
    const host = u.hostname.includes(':') && !u.hostname.startsWith('[') ? `[${u.hostname}]` : u.hostname;
    return { kind: 'nats', servers: `${host}:${portOf(4222)}`, stream: streamOf(path), user, pass, tls: scheme === 'tls' };
  }
  if (scheme === 'redis' || scheme === 'rediss') {
    const path = u.pathname.replace(/^\/+|\/+$/g, '');
    let db = 0;
    if (path !== '') {
      if (!/^\d{1,2}$/.test(path)) fail(`path "${u.pathname}" must be a database number (0 to 15 on a default server)`);
      db = Number(path);
    }
    for (const key of u.searchParams.keys()) if (key !== 'stream') fail(`unknown parameter "${key}" (only stream=name)`);
    return {
      kind: 'redis',
      host: u.hostname.replace(/^\[|\]$/g, ''),
      port: portOf(6379),
      db,
      stream: streamOf(u.searchParams.get('stream')),
      username: user,
      password: pass,
      tls: scheme === 'rediss',
    };
  }
  return fail(`scheme "${scheme}:" is not supported; use nats://, tls://, redis:// or rediss://`);
}

/** Options shared by both engines. */
export interface BusCommonOptions {
  /**
   * Delay between a client's own reconnect attempts (src/sources/backoff.ts).
   * @defaultValue DEFAULT_BACKOFF (100 ms doubling to 5 s) — the one policy for long-lived connections.
   */
  backoff?: BackoffOptions;
  /**
   * How long connect() waits for the server (or for the client's reconnect) before it rejects.
   * @defaultValue 5000 — long enough for a loaded server, short enough that `retry` events report an outage.
   */
  connectTimeoutMs?: number;
}
