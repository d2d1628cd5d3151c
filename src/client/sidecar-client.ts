import { Client, Pool } from 'undici';
import pino from 'pino';
import { CacheCore } from '../cache/core.js';
import type {
  CollectionClient,
  CollectionHit,
  CollectionSearch,
  EntityClient,
  EntityLoaderFn,
  EntityWhere,
  MemoryClient,
  PersonalityInput,
  PersonalityWithConfig,
  SearchInput,
  SimilarMemory,
  StoreInput,
} from '../contract/client.js';
import { ConfigError, DatabaseUnavailableError, errorFromCode, ForbiddenError, HTTP_STATUS, MemorySyncError, UnauthorizedError } from '../contract/errors.js';
import type { EntityShape, SchemaShape } from '../contract/shape.js';
import { PATHS, type ErrorBody } from '../contract/wire.js';
import { entityFromWire, fromWire } from '../contract/wire-values.js';
import { EventStream } from '../sources/event-stream.js';
import { SidecarStreamSource } from '../sources/sidecar-stream.js';
import { lookupFrom } from '../validation/collection.js';
import { validateId } from '../validation/memory.js';

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
  /** Per request: the longest wait for the response headers, and for each gap in the body. @defaultValue 5000 */
  timeoutMs?: number;
  /** @defaultValue 2000 */
  connectTimeoutMs?: number;
  /** Keep-alive sockets to the sidecar. @defaultValue 16 */
  connections?: number;
  /** An idle socket is closed after this long (the server's Keep-Alive hint wins when shorter). @defaultValue 30000 */
  keepAliveTimeoutMs?: number;
  /**
   * Keep entities in this process too, kept in step by the sidecar's
   * /v1/events stream: a hit costs no HTTP round trip. Served only while the
   * stream is open and the sidecar's source is up; flushed on any gap.
   */
  localCache?: { max?: number; ttlMs?: number; negativeTtlMs?: number; maxEvictions?: number };
}

const JSON_HEADERS = { 'content-type': 'application/json', accept: 'application/json' };

/** JSON has no Float32Array: JSON.stringify would write {"0":…}. */
function toWireBody(input: unknown): unknown {
  const e = (input as { embedding?: unknown } | null)?.embedding;
  return ArrayBuffer.isView(e) ? { ...(input as object), embedding: Array.from(e as Float32Array) } : input;
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
 * The sidecar's HTTP API behind the same interface as createMemorySync():
 * switch with one line. Keep-alive sockets (undici Pool); errors are the
 * package's error classes, and an unreachable, timed-out or draining sidecar
 * is a DatabaseUnavailableError, like a database outage in-process; values
 * come back with their Prisma types (Date, BigInt, Decimal, bytes).
 */
export class SidecarClient implements MemoryClient {
  private readonly pool: Pool;
  private readonly basePath: string;
  private readonly timeoutMs: number;
  private readonly connectTimeoutMs: number;
  private readonly source: SidecarStreamSource | undefined;
  private local: CacheCore | undefined;
  private shapes: Promise<SchemaShape> | undefined;
  private readonly loaders = new Map<string, EntityLoaderFn>();
  private closed = false;
  private readonly auth: Record<string, string>;

  constructor(private readonly options: SidecarClientOptions) {
    const url = new URL(options.url);
    if (options.token !== undefined && !/^[\x21-\x7e]+$/.test(options.token)) {
      throw new ConfigError('options.token', "must be printable ASCII without spaces, as the sidecar's MEMORY_SYNC_TOKEN or MEMORY_SYNC_READ_TOKEN");
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
      connect: { timeout: this.connectTimeoutMs },
    });
    if (options.localCache) {
      const stream = new EventStream(new Client(url.origin, { connect: { timeout: this.connectTimeoutMs } }), this.basePath + PATHS.events, undefined, this.auth);
      this.source = new SidecarStreamSource(stream, (token, timeoutMs) => this.requestSync(token, timeoutMs));
      // The same core, and so the same rules, as the sidecar's own cache; entities only, learnt
      // from the sidecar (GET /v1/schema). Until then it holds nothing and lookups go over HTTP.
      this.local = new CacheCore({ logger: pino({ level: 'silent' }), watched: [], entities: [] });
      this.local.connect(this.source);
      void this.source.start();
      void this.schema()
        .then((s) => this.makeLocal(s))
        .catch(() => {});
    }
  }

  /** What the sidecar declares (GET /v1/schema), fetched once. */
  schema(): Promise<SchemaShape> {
    this.shapes ??= this.call('GET', PATHS.schema).then((r) => this.expect(r, 200) as SchemaShape);
    this.shapes.catch(() => (this.shapes = undefined)); // a failure is retried on next use
    return this.shapes;
  }

  private declared = false;

  private makeLocal(s: SchemaShape): void {
    if (this.declared || this.closed || !this.local) return;
    this.declared = true;
    const lc = this.options.localCache!;
    this.local.declare(
      s.entities.map((shape) => ({
        shape,
        max: lc.max ?? 1_000,
        ttlMs: lc.ttlMs ?? 300_000,
        negativeTtlMs: lc.negativeTtlMs ?? 5_000,
        maxEvictions: lc.maxEvictions ?? 10_000,
        canon: (f) => shape.root.fields.find((x) => x.name === f)?.canon,
        load: (index, values) => this.loadEntity(shape, index, values),
      })),
      s.watched,
    );
  }

  /** The local cache's core (with `localCache`): `serving`, `stats()`, and its events. */
  get localCache(): CacheCore | undefined {
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

  /** Resolves once the local cache knows what the sidecar declares (or at once without `localCache`). */
  async ready(): Promise<void> {
    if (!this.options.localCache) return;
    this.makeLocal(await this.schema());
  }

  private entityShape(s: SchemaShape, name: string): EntityShape {
    const shape = s.entities.find((e) => e.name === name);
    if (!shape) throw new ConfigError('entity', `the sidecar declares no entity ${JSON.stringify(name)} (${s.entities.map((e) => e.name).join(', ') || 'none'})`);
    return shape;
  }

  private loadEntity(shape: EntityShape, index: number, values: readonly unknown[]): Promise<object | null> {
    const custom = this.loaders.get(shape.name);
    const lookup = shape.lookups[index]!;
    if (custom) return custom({ name: lookup.name, fields: lookup.fields, values });
    return this.fetchEntity(shape, index, values);
  }

  private async fetchEntity(shape: EntityShape, index: number, values: readonly unknown[]): Promise<object | null> {
    const lookup = shape.lookups[index]!;
    const name = encodeURIComponent(shape.name);
    const path =
      index === 0 && lookup.fields.length === 1
        ? `${PATHS.entities}${name}/${encodeURIComponent(String(values[0]))}`
        : `${PATHS.entities}${name}?${lookup.fields.map((f, i) => `${encodeURIComponent(f)}=${encodeURIComponent(String(values[i]))}`).join('&')}`;
    const r = await this.call('GET', path);
    if (r.status === 404 && (r.body as Partial<ErrorBody>).code === 'not_found') return null;
    return entityFromWire(shape.root, this.expect(r, 200));
  }

  entity(name: string): EntityClient {
    return {
      get: async (where: EntityWhere) => {
        const s = await this.schema();
        const shape = this.entityShape(s, name);
        const { index, values } = lookupFrom(shape, where);
        this.makeLocal(s);
        const local = this.declared ? this.local : undefined;
        if (!local) return (await this.fetchEntity(shape, index, values)) as Record<string, unknown> | null;
        const hit = local.peekEntity(name, index, values);
        if (hit !== undefined) return hit as Record<string, unknown> | null;
        return (await local.getEntity(name, index, values)) as Record<string, unknown> | null;
      },
    };
  }

  collection(name: string): CollectionClient {
    return {
      search: async (input: CollectionSearch) => {
        const s = await this.schema();
        const shape = s.collections.find((c) => c.name === name);
        if (!shape) throw new ConfigError('collection', `the sidecar declares no collection ${JSON.stringify(name)}`);
        const r = await this.call('POST', `${PATHS.collections}${encodeURIComponent(name)}/search`, toWireBody(input));
        const { results } = this.expect(r, 200) as { results: Record<string, unknown>[] };
        for (const h of results) for (const f of shape.select) h[f.name] = fromWire(f, h[f.name]);
        return results as CollectionHit[];
      },
    };
  }

  /** Only with `localCache`: the bot process loads and caches, the sidecar's stream invalidates. */
  cacheEntityWith(name: string, load: EntityLoaderFn): boolean {
    if (!this.options.localCache) return false;
    this.loaders.set(name, load);
    this.local?.clearEntity(name);
    return true;
  }

  /** @deprecated since 0.2: cacheEntityWith('personality', …). */
  cachePersonalitiesWith(load: (id: string) => Promise<object | null>): boolean {
    return this.cacheEntityWith('personality', ({ values }) => load(String(values[0])));
  }

  getPersonality(id: string): Promise<PersonalityWithConfig | null> {
    const key = (() => {
      try {
        return validateId(id);
      } catch (err) {
        return err as Error;
      }
    })();
    if (key instanceof Error) return Promise.reject(key);
    const hit = this.declared ? this.local?.peekEntity('personality', 0, [key]) : undefined;
    if (hit !== undefined) return Promise.resolve(hit as PersonalityWithConfig | null);
    return this.entity('personality').get(key) as Promise<PersonalityWithConfig | null>;
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

  async findSimilarMemories(input: SearchInput): Promise<SimilarMemory[]> {
    const r = await this.call('POST', PATHS.search, toWireBody(input));
    const { results } = this.expect(r, 200) as { results: SimilarMemory[] };
    for (const m of results) m.createdAt = new Date(m.createdAt);
    return results;
  }

  async storeMemory(input: StoreInput): Promise<string> {
    const r = await this.call('POST', PATHS.memories, toWireBody(input));
    return (this.expect(r, 201) as { id: string }).id;
  }

  async upsertPersonality(id: string, input: PersonalityInput): Promise<{ personality: PersonalityWithConfig; created: boolean }> {
    const key = validateId(id);
    try {
      const r = await this.call('PUT', PATHS.personality + key, input);
      if (r.status !== 200 && r.status !== 201) throw errorFrom(r.status, r.body);
      const shape = this.entityShape(await this.schema(), 'personality');
      return { personality: entityFromWire(shape.root, r.body) as unknown as PersonalityWithConfig, created: r.status === 201 };
    } finally {
      this.local?.markWritten('Personality', [{ id: key }]);
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
      this.local?.markWritten('Personality', [], [[key]]);
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
    this.closed = true;
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
