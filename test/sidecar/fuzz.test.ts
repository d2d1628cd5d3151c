import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EMBEDDING_DIMENSION } from '../../src/embedding.js';
import { connect, createMigratedDatabase, insertPersonality, seededVectors, vectorLiteral, type TestDb } from '../helpers/db.js';
import { killLeftovers, spawnSidecar, type SidecarProcess } from './helpers.js';

/*
 * Bad-input fuzz of a real sidecar: random, mostly malformed requests to every
 * route. Contract: no response is a 5xx, every error has the stable
 * { error, code } shape, and nothing is written. FUZZ_SEED=<n> replays a run;
 * FUZZ_COUNT=<n> makes it longer.
 */
const SEED = Number(process.env.FUZZ_SEED ?? 1_125_2026);
const COUNT = Number(process.env.FUZZ_COUNT ?? 400);
const CONCURRENCY = 8;
const D = EMBEDDING_DIMENSION;

/** mulberry32: small, seedable, good enough to pick cases. */
function prng(seed: number) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const int = (n: number) => Math.floor(next() * n);
  return { next, int, pick: <T>(xs: readonly T[]): T => xs[int(xs.length)]!, chance: (p: number) => next() < p };
}
type Rng = ReturnType<typeof prng>;

// A value rendered into the JSON text verbatim (1e400, NaN, -0...), which JSON.stringify cannot produce.
const raw = (token: string) => `\u0001RAW:${token}\u0001`;
const toJson = (v: unknown) => JSON.stringify(v).replace(/"\\u0001RAW:(.*?)\\u0001"/g, (_m, token: string) => JSON.parse(`"${token}"`) as string);
const deepJson = (depth: number) => '{"a":'.repeat(depth) + '1' + '}'.repeat(depth);

const BAD_IDS: readonly unknown[] = [
  '', 'not-a-uuid', '00000000-0000-0000-0000-00000000000g', '00000000-0000-0000-0000-0000000000001', 123, 0, -1, 1.5, null, true, [],
  {}, 'x'.repeat(5000), ' 00000000-0000-4000-8000-000000000001', '00000000-0000-4000-8000-000000000001\u0000', '\u0000', '\ud800', '٠٠٠٠٠٠٠٠-٠٠٠٠-٠٠٠٠-٠٠٠٠-٠٠٠٠٠٠٠٠٠٠٠٠', raw('1e400'),
];
const BAD_CHANNELS: readonly unknown[] = ['', 'x'.repeat(201), 'a\u0000b', '\ud800', 'x\udfff', 5, null, [], {}, true, raw('NaN')];
const BAD_CONTENT: readonly unknown[] = ['', 'a\u0000b', 'lone \udc00', 'x'.repeat(100_001), 7, null, {}, ['x'], false];
const BAD_METADATA: readonly unknown[] = [
  'string', 5, true, { k: 'v\u0000' }, { '\u0000': 1 }, { k: '\ud800' }, { big: 'x'.repeat(70 * 1024) }, raw(deepJson(33)), raw(deepJson(5000)),
];
const BAD_LIMITS: readonly unknown[] = [0, 101, -1, 1.5, '5', null, true, [], {}, raw('1e400'), raw('-0.0e999'), 2 ** 53, Number.MAX_VALUE];
const BAD_SIMILARITY: readonly unknown[] = [1.0000001, -1.5, 2, '0.5', null, [], {}, raw('1e400'), raw('-1e400'), true];

/** An embedding no valid call may carry: every kind the issue names, and then some. */
function badEmbedding(r: Rng): unknown {
  const fill = (f: (i: number) => unknown) => Array.from({ length: D }, (_, i) => f(i));
  const good = () => fill(() => r.next() * 2 - 1);
  const spoil = (v: unknown[], bad: unknown) => {
    v[r.int(D)] = bad;
    return v;
  };
  switch (r.int(17)) {
    case 0: return fill(() => 1e-30); // squared norm underflows float32
    case 1: return fill(() => r.pick([1e-40, 1e-45, 5e-324, -1e-39, 0])); // subnormal only
    case 2: return fill((i) => (i === 3 ? 2 ** -63 * 0.999 : 0)); // just below the smallest normal squared norm
    case 3: return fill(() => r.pick([1e18, -1e19])); // squared norm overflows
    case 4: return spoil(good(), r.pick([1e39, -3.5e38, Number.MAX_VALUE, raw('1e400'), raw('-1e400')])); // element overflows float32
    case 5: return spoil(good(), r.pick(['NaN', 'Infinity', '-Infinity', '1', '', null, true, [], {}]));
    case 6: return raw(`[${good().slice(1).join(',')},NaN]`); // NaN literal: not JSON
    case 7: return fill(() => 0);
    case 8: return good().slice(0, r.int(D)); // too short
    case 9: return [...good(), ...good().slice(0, 1 + r.int(50))]; // too long
    case 10: return fill(() => [r.next()]); // nested
    case 11: return Object.fromEntries(good().map((x, i) => [i, x])); // array-like object
    case 12: return r.pick(['', 'x', 5, null, true, {}, []]);
    case 13: return good().map(String);
    case 14: return raw(`[${good().join(',')}`); // truncated
    case 15: return fill(() => r.pick([1e-30, 1e-40])).map((x, i) => (i === 0 ? 1e-20 : x)); // subnormal tail, norm still below normal
    default: return new Array(1 + r.int(700_000)).fill(0.5); // far too long (past 2 MiB: 413)
  }
}

const validEmbedding = (r: Rng) => Array.from(seededVectors(1 + r.int(1_000_000), 1)[0]!);

interface Req {
  method: string;
  path: string;
  contentType: string | null;
  body: string | Buffer | undefined;
}

interface Fixture {
  personalityId: string;
  memoryIds: string[];
}

function id(r: Rng): string {
  const v = r.chance(0.3) ? randomUuidFrom(r) : r.pick(BAD_IDS);
  const s = typeof v === 'string' ? v : toJson(v);
  return r.chance(0.8) ? percent(s) : r.pick(['%', '%zz', '%00', '..%2F..%2Fetc%2Fpasswd', '%E0%A4%A', '%ED%A0%80', '%FF', s.replace(/[^\x21-\x7e]/g, '')]);
}

/** encodeURIComponent, except that a lone surrogate goes out as U+FFFD instead of throwing. */
const percent = (s: string) =>
  [...Buffer.from(s, 'utf8')].map((b) => (/[A-Za-z0-9\-_.~]/.test(String.fromCharCode(b)) ? String.fromCharCode(b) : `%${b.toString(16).padStart(2, '0').toUpperCase()}`)).join('');

function randomUuidFrom(r: Rng): string {
  const hex = () => r.int(16).toString(16);
  const part = (n: number) => Array.from({ length: n }, hex).join('');
  return `${part(8)}-${part(4)}-4${part(3)}-8${part(3)}-${part(12)}`;
}

function searchBody(r: Rng, f: Fixture): unknown {
  const body: Record<string, unknown> = {
    personalityId: r.pick([f.personalityId, f.personalityId.toUpperCase(), randomUuidFrom(r), ...BAD_IDS.slice(0, 6)]),
    embedding: r.chance(0.6) ? badEmbedding(r) : validEmbedding(r),
  };
  if (r.chance(0.5)) body.channelId = r.chance(0.5) ? 'general' : r.pick(BAD_CHANNELS);
  if (r.chance(0.5)) body.limit = r.chance(0.4) ? 1 + r.int(100) : r.pick(BAD_LIMITS);
  if (r.chance(0.5)) body.minSimilarity = r.chance(0.4) ? r.next() * 2 - 1 : r.pick(BAD_SIMILARITY);
  if (r.chance(0.2)) body[r.pick(['extra', '__proto__', 'constructor'])] = r.pick([1, { polluted: true }, null]);
  if (r.chance(0.15)) delete body[r.pick(['personalityId', 'embedding'])];
  return body;
}

/** Never a body that could be stored: either no such personality, or at least one field that must be rejected. */
function storeBody(r: Rng, f: Fixture): unknown {
  const body: Record<string, unknown> = {
    personalityId: f.personalityId,
    channelId: 'general',
    content: 'fuzz',
    embedding: validEmbedding(r),
  };
  if (r.chance(0.3)) body.metadata = { note: 'ok' };
  const spoilers: Array<() => void> = [
    () => (body.personalityId = randomUuidFrom(r)), // valid but unknown: 404, nothing written
    () => (body.personalityId = r.pick(BAD_IDS)),
    () => (body.embedding = badEmbedding(r)),
    () => (body.embedding = badEmbedding(r)),
    () => (body.embedding = badEmbedding(r)),
    () => (body.channelId = r.pick(BAD_CHANNELS)),
    () => (body.content = r.pick(BAD_CONTENT)),
    () => (body.metadata = r.pick(BAD_METADATA)),
    () => delete body[r.pick(['personalityId', 'channelId', 'content', 'embedding'])],
  ];
  for (let n = 1 + r.int(2); n > 0; n--) r.pick(spoilers)();
  return body;
}

const CONTENT_TYPES = [
  'application/json', 'application/json; charset=utf-8', 'APPLICATION/JSON', 'text/plain', 'application/x-www-form-urlencoded',
  'multipart/form-data; boundary=x', 'application/octet-stream', 'application/json; charset=utf-16', 'application/vnd.api+json', '',
];

/** The body as sent: usually the JSON text, sometimes mangled or replaced. */
function encode(r: Rng, value: unknown): { contentType: string | null; body: string | Buffer | undefined } {
  const contentType = r.chance(0.75) ? 'application/json' : r.chance(0.15) ? null : r.pick(CONTENT_TYPES);
  const text = toJson(value);
  switch (r.int(12)) {
    case 0: return { contentType, body: text.slice(0, r.int(text.length)) };
    case 1: return { contentType, body: Buffer.from(Array.from({ length: 1 + r.int(64) }, () => r.int(256))) };
    case 2: return { contentType, body: r.pick(['', 'null', '[]', '"x"', '1e400', 'NaN', '{', '{"a":1}{"b":2}', '\ufeff{}', '{"__proto__":{"x":1}}']) };
    case 3: return { contentType, body: undefined };
    default: return { contentType, body: text };
  }
}

function nextRequest(r: Rng, f: Fixture): Req {
  const withBody = (method: string, path: string, value: unknown): Req => ({ method, path, ...encode(r, value) });
  const anyBody = () => r.pick<unknown>([searchBody(r, f), storeBody(r, f), {}, [], null, 'x', 1]);
  switch (r.int(12)) {
    case 0:
    case 1:
    case 2: return withBody('POST', '/v1/memories/search', searchBody(r, f));
    case 3:
    case 4:
    case 5: return withBody('POST', '/v1/memories', storeBody(r, f));
    case 6: return { method: 'GET', path: `/v1/personalities/${id(r)}`, contentType: null, body: undefined };
    case 7: return withBody(r.pick(['PUT', 'PATCH']), `/v1/personalities/${id(r)}`, anyBody());
    case 8: return { method: 'DELETE', path: `/v1/personalities/${id(r)}`, contentType: null, body: undefined };
    case 9: return { method: 'DELETE', path: `/v1/memories/${id(r)}`, ...(r.chance(0.3) ? encode(r, anyBody()) : { contentType: null, body: undefined }) };
    case 10: return withBody(r.pick(['GET', 'PUT', 'DELETE', 'PATCH']), r.pick(['/v1/memories/search', '/v1/memories']), anyBody());
    default: {
      const path = r.pick(['/', '/v1', '/v2/memories', '/v1/memories/search/extra', '/v1/personalities/', '/v1/unknown', `/v1/${id(r)}`, '/%', '//v1//memories', '/v1/memories?x=%zz']);
      return withBody(r.pick(['GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS', 'HEAD']), path, anyBody());
    }
  }
}

let db: TestDb;
let writer: pg.Client;
let sc: SidecarProcess;
const fixture: Fixture = { personalityId: '', memoryIds: [] };

/** Row counts and a digest of every row of the tables a request could write. */
async function snapshot(): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const table of ['personalities', 'llm_configs', 'memories', 'conversation_history']) {
    const { rows } = await writer.query(`SELECT count(*)::text AS n, coalesce(md5(string_agg(t::text, ',' ORDER BY t.id)), '') AS digest FROM ${table} t`);
    out[table] = `${rows[0].n} ${rows[0].digest}`;
  }
  return out;
}

beforeAll(async () => {
  db = await createMigratedDatabase();
  writer = await connect(db.url);
  fixture.personalityId = await insertPersonality(writer, 'fuzz');
  await writer.query(`INSERT INTO llm_configs ("personalityId", model, "updatedAt") VALUES ($1, 'm', now())`, [fixture.personalityId]);
  for (const [i, v] of seededVectors(99, 20).entries()) {
    const { rows } = await writer.query<{ id: string }>(
      `INSERT INTO memories ("personalityId", "channelId", content, embedding) VALUES ($1, $2, $3, $4::vector) RETURNING id`,
      [fixture.personalityId, i % 2 ? 'general' : 'other', `memory ${i}`, vectorLiteral(v)],
    );
    fixture.memoryIds.push(rows[0]!.id);
  }
  sc = await spawnSidecar({ DATABASE_URL: db.url });
});
afterAll(async () => {
  expect(await sc?.stop()).toBe(0);
  await killLeftovers();
  await writer?.end();
  await db?.drop();
});

describe(`bad-input fuzz (FUZZ_SEED=${SEED})`, () => {
  it(`${COUNT} random requests: no 5xx, every error typed, nothing written`, async () => {
    const before = await snapshot();
    const r = prng(SEED);
    const requests = Array.from({ length: COUNT }, () => nextRequest(r, fixture));
    const logMark = sc.mark();
    const failures: string[] = [];
    const statuses = new Map<number, number>();

    const send = async (req: Req, n: number) => {
      const headers: Record<string, string> = {};
      if (req.contentType !== null) headers['content-type'] = req.contentType;
      const what = () => `#${n} ${req.method} ${req.path.slice(0, 120)} [${req.contentType}] ${String(req.body ?? '').slice(0, 160)}`;
      try {
        const body = req.method === 'GET' || req.method === 'HEAD' ? undefined : req.body;
        const res = await fetch(sc.url + req.path, { method: req.method, headers, body, signal: AbortSignal.timeout(15_000) });
        const text = await res.text();
        statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
        if (res.status >= 500) failures.push(`${res.status} ${text.slice(0, 300)} <- ${what()}`);
        if (res.status >= 400 && req.method !== 'HEAD') {
          let body: { error?: unknown; code?: unknown } | undefined;
          try {
            body = JSON.parse(text) as typeof body;
          } catch {
            body = undefined;
          }
          if (typeof body?.error !== 'string' || typeof body.code !== 'string') failures.push(`untyped error ${res.status} ${text.slice(0, 200)} <- ${what()}`);
        }
      } catch (err) {
        failures.push(`no response (${(err as Error).message}) <- ${what()}`);
      }
    };
    for (let i = 0; i < requests.length; i += CONCURRENCY) {
      await Promise.all(requests.slice(i, i + CONCURRENCY).map((req, j) => send(req, i + j)));
    }

    expect(failures, `replay with FUZZ_SEED=${SEED}`).toEqual([]);
    expect(await snapshot()).toEqual(before);
    // The answers were decided by validation, not by luck: mostly 400s, some 404s.
    expect(statuses.get(400) ?? 0).toBeGreaterThan(COUNT / 3);
    expect(statuses.get(404) ?? 0).toBeGreaterThan(0);
    // Still alive and serving; nothing logged at error level or above.
    expect(sc.proc.exitCode).toBeNull();
    expect((await sc.request('GET', '/healthz')).status).toBe(200);
    expect(sc.logs.slice(logMark).filter((l) => l.level >= 50)).toEqual([]);
  });
});
