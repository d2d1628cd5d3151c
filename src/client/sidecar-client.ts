import { Client, Pool } from 'undici';
import { CacheCore } from '../cache/core.js';
import { ConfigError, DatabaseUnavailableError, errorFromCode, ForbiddenError, HTTP_STATUS, MemorySyncError, UnauthorizedError } from '../contract/errors.js';
import type { ErrorBody } from '../contract/wire.js';
import { PATHS } from '../contract/wire.js';
import { EventStream } from '../sources/event-stream.js';
import { SidecarStreamSource } from '../sources/sidecar-stream.js';
import { validateId } from '../validation/memory.js';
import pino from 'pino';
import type { MemoryClient, PersonalityInput, PersonalityLoader, PersonalityWithConfig, SearchInput, SimilarMemory, StoreInput } from './memory-sync.js';

export interface SidecarClientOptions {
  /** The sidecar's base URL, e.g. http://127.0.0.1:7420. */
  url: string;
  /**
   * The sidecar's MEMORY_SYNC_TOKEN (everything) or MEMORY_SYNC_READ_TOKEN
   * (lookups, search, sync, the event stream), sent as `Authorization:
   * Bearer` on every request and on the local cache's event stream. A
   * refused token is an UnauthorizedError (401) or ForbiddenError (403),
   * never retried.
   * @defaultValue none: a sidecar on loopback without MEMORY_SYNC_TOKEN asks for none
   */
  token?: string;
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
  // The status a code maps to is the server's; any code we know rebuilds its class.
  if (typeof b.code === 'string' && b.code in HTTP_STATUS && b.code !== 'internal' && b.code !== 'no_route') {
    return errorFromCode(b.code, message, { field: b.field, sqlState: b.sqlState });
  }
  // A proxy in front of the sidecar may answer these itself, without our body.
  if (status === 401) return new UnauthorizedError(`sidecar answered HTTP 401: ${message}`);
  if (status === 403) return new ForbiddenError(`sidecar answered HTTP 403: ${message}`);
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
  private readonly local: CacheCore<PersonalityWithConfig> | undefined;
  private loader: (id: string) => Promise<PersonalityWithConfig | null> = (id) => this.fetchPersonality(id);
  private readonly source: SidecarStreamSource | undefined;
  private readonly auth: Record<string, string>;

  constructor(options: SidecarClientOptions) {
    const url = new URL(options.url);
    if (options.token !== undefined && !/^[\x21-\x7e]+$/.test(options.token)) {
      throw new ConfigError('options.token', 'must be printable ASCII without spaces, as the sidecar\'s MEMORY_SYNC_TOKEN or MEMORY_SYNC_READ_TOKEN');
    }
    this.auth = options.token === undefined ? {} : { authorization: `Bearer ${options.token}` };
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
      const stream = new EventStream(new Client(url.origin, { connect: { timeout: this.connectTimeoutMs } }), this.basePath + PATHS.events, undefined, this.auth);
      this.source = new SidecarStreamSource(stream, (token, timeoutMs) => this.requestSync(token, timeoutMs));
      const lc = options.localCache;
      // The same core, and so the same rules, as the sidecar's own cache; personalities only.
      this.local = new CacheCore<PersonalityWithConfig>({
        logger: pino({ level: 'silent' }),
        personalities: { max: lc.max ?? 1_000, ttlMs: lc.ttlMs ?? 300_000, negativeTtlMs: lc.negativeTtlMs ?? 5_000 },
        loadPersonality: (id) => this.loader(id),
      });
      this.local.connect(this.source);
      void this.source.start();
    }
  }

  /** The local cache's core, when enabled: `serving`, `stats()`, and its events (up, down, invalidation, flush). */
  get localCache(): CacheCore<PersonalityWithConfig> | undefined {
    return this.local;
  }

  /**
   * Why the local cache stopped for good: the sidecar refused its event
   * stream (UnauthorizedError, ForbiddenError), so it serves nothing and
   * every lookup goes to the sidecar. Undefined while all is well.
   */
  get localCacheFailure(): MemorySyncError | undefined {
    return this.source?.failure;
  }

  getPersonality(id: string): Promise<PersonalityWithConfig | null> {
    const hit = this.local?.peekPersonality(id);
    return hit === undefined ? this.getPersonalitySlow(id) : Promise.resolve(hit);
  }

  private async getPersonalitySlow(id: string): Promise<PersonalityWithConfig | null> {
    const key = validateId(id);
    return this.local ? this.local.getPersonality(key) : this.fetchPersonality(key);
  }

  /** Only with `localCache`: the bot process loads and caches, the sidecar's stream invalidates. */
  cachePersonalitiesWith(load: PersonalityLoader): boolean {
    if (!this.local) return false;
    this.loader = load as (id: string) => Promise<PersonalityWithConfig | null>;
    this.local.clearPersonalities();
    return true;
  }

  /**
   * Resolves once every change committed before the call has been applied by
   * the sidecar (and by the local cache, when enabled): a bot that wrote with
   * its own Prisma then reads its write through the sidecar.
   */
  sync(timeoutMs = 5_000): Promise<void> {
    return this.source ? this.source.sync(timeoutMs) : this.requestSync(undefined, timeoutMs);
  }

  private async requestSync(token: string | undefined, timeoutMs: number): Promise<void> {
    const r = await this.call('POST', PATHS.sync, { token, timeoutMs });
    this.expect(r, 204);
  }

  private async fetchPersonality(id: string): Promise<PersonalityWithConfig | null> {
    const r = await this.call('GET', PATHS.personality + validateId(id));
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

  async upsertPersonality(id: string, input: PersonalityInput): Promise<{ personality: PersonalityWithConfig; created: boolean }> {
    const key = validateId(id);
    try {
      const r = await this.call('PUT', PATHS.personality + key, input);
      if (r.status !== 200 && r.status !== 201) throw errorFrom(r.status, r.body);
      return { personality: revivePersonality(r.body), created: r.status === 201 };
    } finally {
      this.local?.markPersonalityWritten(key);
    }
  }

  async deletePersonality(id: string): Promise<boolean> {
    const key = validateId(id);
    try {
      const r = await this.call('DELETE', PATHS.personality + key);
      if (r.status === 404 && (r.body as Partial<ErrorBody>).code === 'not_found') return false;
      this.expect(r, 204);
      return true;
    } finally {
      this.local?.markPersonalityWritten(key, true);
    }
  }

  async deleteMemory(id: string): Promise<boolean> {
    const r = await this.call('DELETE', PATHS.memory + validateId(id));
    if (r.status === 404 && (r.body as Partial<ErrorBody>).code === 'not_found') return false;
    this.expect(r, 204);
    return true;
  }

  /** Closes the keep-alive sockets once requests in flight are done. */
  async close(): Promise<void> {
    this.local?.close();
    await this.source?.close();
    await this.pool.close();
  }

  private expect(r: { status: number; body: unknown }, status: number): unknown {
    if (r.status !== status) throw errorFrom(r.status, r.body);
    return r.body;
  }

  private async call(method: 'GET' | 'POST' | 'PUT' | 'DELETE', path: string, payload?: unknown): Promise<{ status: number; body: unknown }> {
    let res;
    try {
      res = await this.pool.request({
        method,
        path: this.basePath + path,
        // headersTimeout starts when the request is sent; this also bounds the wait for a socket.
        signal: AbortSignal.timeout(this.timeoutMs + this.connectTimeoutMs),
        headers: payload === undefined ? { ...this.auth, accept: 'application/json' } : { ...this.auth, ...JSON_HEADERS },
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

/** A client for a running `memory-sync start`; the same methods as createMemorySync(). */
export function createSidecarClient(options: SidecarClientOptions): SidecarClient {
  return new SidecarClient(options);
}
