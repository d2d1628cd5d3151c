import { EventEmitter } from 'node:events';
import { Client, Pool } from 'undici';
import { PersonalityCache } from '../cache/personalities.js';
import { EventStream } from './event-stream.js';
import { assertUuid } from '../embedding.js';
import {
  DatabaseUnavailableError,
  MemorySyncError,
  NotFoundError,
  QueryError,
  ValidationError,
} from '../errors.js';
import type { ErrorBody } from '../sidecar/protocol.js';
import { PATHS } from '../sidecar/protocol.js';
import type { MemoryClient, PersonalityWithConfig, SearchInput, SimilarMemory, StoreInput } from './memory-sync.js';

export interface SidecarClientOptions {
  /** The sidecar's base URL, e.g. http://127.0.0.1:7420. */
  url: string;
  /** Per request: the longest wait for the response headers, and for each gap in the body. */
  timeoutMs?: number;
  connectTimeoutMs?: number;
  /** Keep-alive sockets to the sidecar. */
  connections?: number;
  /** An idle socket is closed after this long (the server's Keep-Alive hint wins when shorter). */
  keepAliveTimeoutMs?: number;
  /**
   * Keep personalities in this process too, kept in step by the sidecar's
   * /v1/events stream: a hit costs no HTTP round trip. Served only while the
   * stream is open and the sidecar's listener is up; flushed on any gap.
   */
  localCache?: { max?: number; ttlMs?: number; negativeTtlMs?: number };
}

const JSON_HEADERS = { 'content-type': 'application/json', accept: 'application/json' };

interface Timestamps {
  createdAt: Date | string;
  updatedAt: Date | string;
}

/** JSON carries dates as ISO strings; the in-process client returns Date. */
function reviveDates(o: Timestamps): void {
  o.createdAt = new Date(o.createdAt);
  o.updatedAt = new Date(o.updatedAt);
}

function revivePersonality(body: unknown): PersonalityWithConfig {
  const p = body as PersonalityWithConfig;
  reviveDates(p);
  if (p.llmConfig) reviveDates(p.llmConfig);
  return p;
}

/** JSON has no Float32Array: JSON.stringify would write {"0":…}. */
function toWire(input: SearchInput | StoreInput): unknown {
  const e = (input as Partial<SearchInput> | null)?.embedding;
  return ArrayBuffer.isView(e) ? { ...input, embedding: Array.from(e) } : input;
}

function errorFrom(status: number, body: unknown): Error {
  const b = (typeof body === 'object' && body !== null ? body : {}) as Partial<ErrorBody>;
  const message = typeof b.error === 'string' ? b.error : `sidecar answered HTTP ${status}`;
  switch (b.code) {
    case 'validation': {
      const field = b.field ?? 'input';
      return new ValidationError(field, message.startsWith(`${field}: `) ? message.slice(field.length + 2) : message);
    }
    case 'not_found':
      return new NotFoundError(message);
    case 'unavailable':
      return new DatabaseUnavailableError(message);
    case 'query':
      return new QueryError(message, b.sqlState);
  }
  // Fastify answers 503 by itself while draining for shutdown.
  if (status === 503) return new DatabaseUnavailableError(`sidecar unavailable (HTTP 503): ${message}`);
  return new MemorySyncError(`sidecar answered HTTP ${status}: ${message}`);
}

/**
 * The sidecar's HTTP API behind the same MemoryClient interface as
 * createMemorySync(): switch with one line. Keep-alive sockets (undici Pool);
 * errors are the package's error classes, and an unreachable, timed-out or
 * draining sidecar is a DatabaseUnavailableError, like a database outage
 * in-process; dates come back as Date.
 */
export class SidecarClient implements MemoryClient {
  private readonly pool: Pool;
  private readonly basePath: string;
  private readonly timeoutMs: number;
  private readonly connectTimeoutMs: number;
  private readonly local: LocalCache | undefined;

  constructor(options: SidecarClientOptions) {
    const url = new URL(options.url);
    this.basePath = url.pathname.replace(/\/+$/, '');
    this.timeoutMs = options.timeoutMs ?? 5_000;
    this.connectTimeoutMs = options.connectTimeoutMs ?? 2_000;
    this.pool = new Pool(url.origin, {
      connections: options.connections ?? 16,
      keepAliveTimeout: options.keepAliveTimeoutMs ?? 30_000,
      headersTimeout: this.timeoutMs,
      bodyTimeout: this.timeoutMs,
      connect: { timeout: options.connectTimeoutMs ?? 2_000 },
    });
    if (options.localCache) {
      const stream = new EventStream(new Client(url.origin, { connect: { timeout: options.connectTimeoutMs ?? 2_000 } }), this.basePath + PATHS.events);
      this.local = new LocalCache(stream, options.localCache, (id) => this.fetchPersonality(id));
      stream.start();
    }
  }

  /** The local cache, when enabled: `serving`, stats and events. */
  get localCache(): LocalCache | undefined {
    return this.local;
  }

  getPersonality(id: string): Promise<PersonalityWithConfig | null> {
    const hit = this.local?.serving ? this.local.cache.peek(id) : undefined;
    return hit === undefined ? this.getPersonalitySlow(id) : Promise.resolve(hit);
  }

  private async getPersonalitySlow(id: string): Promise<PersonalityWithConfig | null> {
    const key = assertUuid(id, 'id');
    return this.local?.serving ? this.local.cache.get(key) : this.fetchPersonality(key);
  }

  private async fetchPersonality(id: string): Promise<PersonalityWithConfig | null> {
    const r = await this.call('GET', PATHS.personality + assertUuid(id, 'id'));
    if (r.status === 404 && (r.body as Partial<ErrorBody>).code === 'not_found') return null;
    return revivePersonality(this.expect(r, 200));
  }

  async findSimilarMemories(input: SearchInput): Promise<SimilarMemory[]> {
    const r = await this.call('POST', PATHS.search, toWire(input));
    const { results } = this.expect(r, 200) as { results: SimilarMemory[] };
    for (const m of results) m.createdAt = new Date(m.createdAt);
    return results;
  }

  async storeMemory(input: StoreInput): Promise<string> {
    const r = await this.call('POST', PATHS.memories, toWire(input));
    return (this.expect(r, 201) as { id: string }).id;
  }

  async deleteMemory(id: string): Promise<boolean> {
    const r = await this.call('DELETE', PATHS.memory + assertUuid(id, 'id'));
    if (r.status === 404 && (r.body as Partial<ErrorBody>).code === 'not_found') return false;
    this.expect(r, 204);
    return true;
  }

  /** Closes the keep-alive sockets once requests in flight are done. */
  async close(): Promise<void> {
    await this.local?.close();
    await this.pool.close();
  }

  private expect(r: { status: number; body: unknown }, status: number): unknown {
    if (r.status !== status) throw errorFrom(r.status, r.body);
    return r.body;
  }

  private async call(method: 'GET' | 'POST' | 'DELETE', path: string, payload?: unknown): Promise<{ status: number; body: unknown }> {
    let res;
    try {
      res = await this.pool.request({
        method,
        path: this.basePath + path,
        // headersTimeout starts when the request is sent; this also bounds the wait for a socket.
        signal: AbortSignal.timeout(this.timeoutMs + this.connectTimeoutMs),
        headers: payload === undefined ? { accept: 'application/json' } : JSON_HEADERS,
        body: payload === undefined ? undefined : JSON.stringify(payload),
      });
    } catch (err) {
      throw new DatabaseUnavailableError(`sidecar unreachable: ${(err as Error).message}`, { cause: err });
    }
    if (res.statusCode === 204) {
      await res.body.dump();
      return { status: 204, body: null };
    }
    let text: string;
    try {
      text = await res.body.text();
    } catch (err) {
      throw new DatabaseUnavailableError(`sidecar response interrupted: ${(err as Error).message}`, { cause: err });
    }
    let body: unknown = null;
    try {
      body = text ? JSON.parse(text) : null;
    } catch {
      // Not ours (a proxy's error page?): reported with the status below.
      body = { error: text.slice(0, 200) };
    }
    return { status: res.statusCode, body };
  }
}

/**
 * Personalities cached in the bot's own process, evicted by the sidecar's
 * invalidation stream with the engine's rules. Serves only while the stream
 * is connected and the sidecar's listener is up; any gap flushes it.
 */
export class LocalCache extends EventEmitter<{ invalidation: [event: Record<string, unknown>]; serving: [boolean] }> {
  readonly cache: PersonalityCache<PersonalityWithConfig>;
  private _serving = false;

  constructor(
    private readonly stream: EventStream,
    options: NonNullable<SidecarClientOptions['localCache']>,
    load: (id: string) => Promise<PersonalityWithConfig | null>,
  ) {
    super();
    this.cache = new PersonalityCache<PersonalityWithConfig>({
      max: options.max ?? 1_000,
      ttlMs: options.ttlMs ?? 300_000,
      negativeTtlMs: options.negativeTtlMs ?? 5_000,
      load: async (id) => {
        const p = await load(id);
        return p && Object.freeze(p);
      },
    });
    stream.on('disconnected', () => this.setServing(false));
    stream.on('event', ({ event, data }) => this.apply(event, data as Record<string, unknown>));
  }

  get serving(): boolean {
    return this._serving;
  }

  close(): Promise<void> {
    this.setServing(false);
    return this.stream.close();
  }

  private setServing(serving: boolean): void {
    // Flush on every edge: going down, events may be lost; coming up, they were.
    this.cache.clear();
    if (this._serving === serving) return;
    this._serving = serving;
    this.emit('serving', serving);
  }

  private apply(event: string, data: Record<string, unknown>): void {
    switch (event) {
      case 'state': // first event of every stream
        this.setServing(data.listener === 'up');
        return;
      case 'down':
        this.setServing(false);
        return;
      case 'reconnect':
        this.setServing(true);
        return;
      case 'flush':
        this.cache.clear();
        return;
      case 'invalidation': {
        if (data.table === 'personalities' || data.table === 'llm_configs') {
          if (data.scope === 'table') this.cache.clear();
          else this.cache.delete(Array.isArray(data.personalityIds) ? (data.personalityIds as string[]) : []);
        }
        this.emit('invalidation', data);
        return;
      }
    }
  }
}

/** A client for a running `memory-sync start`; the same methods as createMemorySync(). */
export function createSidecarClient(options: SidecarClientOptions): SidecarClient {
  return new SidecarClient(options);
}
