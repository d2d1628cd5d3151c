import { join } from 'node:path';
import pg from 'pg';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { serverArithmetic } from '../helpers/arithmetic.js';
import { adoptDeclaration } from '../../src/capture/adopt.js';
import { createMemorySync, type MemorySync } from '../../src/client/memory-sync.js';
import { createSidecarClient, type SidecarClient } from '../../src/client/sidecar-client.js';
import { ValidationError } from '../../src/contract/errors.js';
import { normalizeInto } from '../../src/embedding.js';
import { migrate } from '../../src/migrations/migrate.js';
import type { Declaration } from '../../src/schema/declaration.js';
import { loadDeclarationFile } from '../../src/schema/load.js';
import { connect, createDatabase, ROOT, type TestDb } from '../helpers/db.js';
import { rng } from '../helpers/bot.js';
import { killLeftovers, spawnSidecar, type SidecarProcess } from '../sidecar/helpers.js';

/*
 * Declared collections at 384, 768, 1536 and 3072 dimensions (test/fixtures/docs):
 * through collection().search(), the sidecar's route and the remote client,
 * every answer equals exact SQL written by hand here, for every filter form
 * and combination, one-row and empty partitions, adversarial vectors (ties,
 * near-ties, NULL, zero, underflowing and overflowing norms), and after soft
 * deletes, moves between partitions and embedding changes by plain SQL.
 */

const DOCS = join(ROOT, 'test', 'fixtures', 'docs');
const CONFIG = join(DOCS, 'memory-sync.config.json');
const DIMS = [384, 768, 1536, 3072] as const;
const T1 = '11111111-1111-4111-8111-111111111111';
const T2 = '22222222-2222-4222-8222-222222222222';
const T3 = '33333333-3333-4333-8333-333333333333';
const TAGS = ['a', 'b', 'c', null] as const;
const KINDS = ['note', 'fact', 'quote'] as const;
const BASE = Date.parse('2026-01-01T00:00:00Z');

let db: TestDb;
let c: pg.Client;
let lib: MemorySync<Declaration>;
let sc: SidecarProcess;
let remote: SidecarClient;

const literal = (v: ArrayLike<number>) => `[${Array.from(v).join(',')}]`;

/** What every client sends: the query as float32, scaled to unit length (src/embedding.ts). */
function unit(v: number[]): number[] {
  const out = new Float32Array(v.length);
  normalizeInto(Float32Array.from(v), out);
  return Array.from(out);
}

type Cond = unknown;
interface Search {
  partition: string;
  where?: Record<string, Cond>;
  embedding: number[];
  limit: number;
  minSimilarity?: number;
}

const COLUMNS: Record<string, string> = { tag: 'tag', kind: 'kind', score: 'score', weight: 'weight', pinned: 'pinned', at: 'at', id: 'id' };

/** The truth, by hand: the declared where, no NULL or undefined-similarity vectors, each condition as SQL, exact order, ties by id. */
async function truth(dim: number, s: Search): Promise<{ id: string; similarity: number }[]> {
  const values: unknown[] = [literal(s.embedding), s.partition, s.limit];
  const p = (v: unknown) => `$${values.push(v instanceof Date ? v.toISOString() : v)}`;
  const where = ['tenant_id = $2', 'deleted_at IS NULL', 'embedding IS NOT NULL', `vector_norm(embedding) BETWEEN ${2 ** -63} AND ${2 ** 63}`];
  const val = (f: string, v: unknown) => (f === 'at' ? new Date(v as number | string) : v);
  for (const [f, cond] of Object.entries(s.where ?? {})) {
    const col = COLUMNS[f]!;
    if (cond === null) where.push(`${col} IS NULL`);
    else if (typeof cond !== 'object') where.push(`${col} = ${p(val(f, cond))}`);
    else if ('in' in (cond as object)) where.push(`${col} IN (${(cond as { in: unknown[] }).in.map((v) => p(val(f, v))).join(', ')})`);
    else if ('notIn' in (cond as object)) {
      const out = (cond as { notIn: unknown[] }).notIn;
      if (out.length) where.push(`${col} NOT IN (${out.map((v) => p(val(f, v))).join(', ')})`); // an empty list leaves nothing out, NULLs included
    }
    else {
      const ops = { lt: '<', lte: '<=', gt: '>', gte: '>=' } as const;
      for (const [k, v] of Object.entries(cond as Record<string, unknown>)) where.push(`${col} ${ops[k as keyof typeof ops]} ${p(val(f, v))}`);
    }
  }
  if (s.minSimilarity !== undefined) where.push(`1 - (embedding <=> $1::vector) >= ${p(s.minSimilarity)}`);
  const r = await c.query<{ id: number; d: number }>(
    `SELECT id, embedding <=> $1::vector AS d FROM docs_${dim} WHERE ${where.join(' AND ')} ORDER BY (embedding <=> $1::vector) + 0, id LIMIT $3`,
    values,
  );
  return r.rows.map((x) => ({ id: String(x.id), similarity: 1 - Number(x.d) }));
}

/** Rows for one dimension: clusters, exact duplicates, a scaled copy (a near-tie), NULL, zero, tiny and huge vectors, soft-deleted rows. */
async function seed(dim: number): Promise<number[][]> {
  const r = rng(dim);
  const centers = Array.from({ length: 4 }, () => Array.from({ length: dim }, () => r.next() * 2 - 1));
  const vec = () => {
    const ctr = centers[r.int(centers.length)]!;
    return ctr.map((x) => x + (r.next() - 0.5) * 0.6);
  };
  const rows: { id: number; tenant: string; v: number[] | null; deleted: boolean }[] = [];
  for (let i = 1; i <= 240; i++) rows.push({ id: i, tenant: T1, v: vec(), deleted: r.chance(0.08) });
  const dup = rows[9]!.v!;
  rows.push({ id: 241, tenant: T1, v: [...dup], deleted: false }, { id: 242, tenant: T1, v: [...dup], deleted: false });
  rows.push({ id: 243, tenant: T1, v: dup.map((x) => x * 3.0000001), deleted: false });
  rows.push({ id: 244, tenant: T1, v: null, deleted: false });
  rows.push({ id: 245, tenant: T1, v: new Array(dim).fill(0), deleted: false });
  rows.push({ id: 246, tenant: T1, v: dup.map((x) => x * 1e-30), deleted: false }); // squares underflow float32
  rows.push({ id: 247, tenant: T1, v: dup.map((x) => x * 1e25), deleted: false }); // squares overflow float32
  rows.push({ id: 300, tenant: T2, v: vec(), deleted: false }); // a one-row partition
  for (const x of rows) {
    await c.query(
      `INSERT INTO docs_${dim} (id, tenant_id, tag, kind, score, weight, pinned, at, title, deleted_at, embedding)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11::vector)`,
      [x.id, x.tenant, TAGS[x.id % 4], KINDS[x.id % 3], x.id % 100, (x.id % 17) / 3, x.id % 5 === 0, new Date(BASE + x.id * 3_600_000), `doc ${x.id}`, x.deleted ? new Date(BASE) : null, x.v ? literal(x.v) : null],
    );
  }
  return [dup, ...Array.from({ length: 3 }, vec)];
}

/** Every filter form, alone and combined, on every field type. */
function searches(queries: number[][]): Search[] {
  const at = (h: number) => new Date(BASE + h * 3_600_000).toISOString();
  const wheres: (Record<string, Cond> | undefined)[] = [
    undefined,
    { tag: 'a' },
    { tag: { notIn: [] }, id: { notIn: [] } },
    { tag: null },
    { tag: { in: ['a', 'c'] } },
    { tag: { notIn: ['a'] } },
    { kind: 'fact' },
    { kind: { in: ['note', 'quote'] } },
    { score: { gte: 20, lt: 60 } },
    { weight: { gt: 2.5 } },
    { pinned: true },
    { at: { lt: at(120) } },
    { at: { gte: BASE + 200 * 3_600_000 } }, // epoch ms too
    { id: { notIn: [10, 241, 242] } },
    { id: { in: [10, 241, 242, 243, 246] } },
    { tag: { in: ['a', 'b'] }, score: { gte: 10 }, at: { lte: at(200) }, kind: { notIn: ['quote'] } },
    { pinned: false, weight: { lte: 4 }, id: { gt: 50 } },
    { tag: 'zzz' }, // matches nothing
  ];
  const out: Search[] = [];
  for (const [i, q] of queries.entries()) {
    for (const where of wheres) out.push({ partition: T1, embedding: unit(q), limit: i === 0 ? 10 : 20, ...(where ? { where } : {}) });
    out.push({ partition: T1, embedding: unit(q), limit: 100 });
    out.push({ partition: T1, embedding: unit(q), limit: 1 });
    out.push({ partition: T1, embedding: unit(q), limit: 50, minSimilarity: 0.3 });
    out.push({ partition: T2, embedding: unit(q), limit: 5 });
    out.push({ partition: T3, embedding: unit(q), limit: 5 });
  }
  return out;
}

const queriesByDim = new Map<number, number[][]>();

beforeAll(async () => {
  db = await createDatabase('ms_collections');
  await migrate({ databaseUrl: db.url, migrationsDir: join(DOCS, 'migrations'), schemaPath: join(DOCS, 'schema.prisma') });
  c = await connect(db.url);
  for (const d of DIMS) queriesByDim.set(d, await seed(d));
  const adopted = await adoptDeclaration({ databaseUrl: db.url, declaration: await loadDeclarationFile(CONFIG), migrationDir: null });
  expect(adopted.vectorIndexes).toEqual({ docs384: 'created', docs768: 'created', docs1536: 'created', docs3072: 'none' });
  lib = createMemorySync<Declaration>({ databaseUrl: db.url, config: CONFIG, summaryIntervalMs: 0, logger: pino({ level: 'silent' }) });
  await lib.start();
  sc = await spawnSidecar({ DATABASE_URL: db.url, MEMORY_SYNC_CONFIG: CONFIG });
  remote = createSidecarClient({ url: sc.url });
}, 180_000);

afterAll(async () => {
  await remote?.close();
  await lib?.close();
  expect(await sc?.stop()).toBe(0);
  await killLeftovers();
  await c?.end();
  await db?.drop();
});

async function check(dim: number, step: string): Promise<{ hot: number; total: number }> {
  await lib.sync();
  const name = `docs${dim}`;
  for (const t of [T1, T2, T3]) {
    lib.core.warm(name, [t]);
    await lib.core.settled(name, [t]);
  }
  let hot = 0;
  let total = 0;
  for (const s of searches(queriesByDim.get(dim)!)) {
    const before = lib.stats().hotSearches;
    const got = await lib.collection(name).search({ partition: { tenantId: s.partition }, embedding: s.embedding, limit: s.limit, ...(s.where ? { where: s.where } : {}), ...(s.minSimilarity !== undefined ? { minSimilarity: s.minSimilarity } : {}) });
    const served = lib.stats().hotSearches - before;
    hot += served;
    total++;
    const want = await truth(dim, s);
    const what = `${step}: ${dim}-d, ${served ? 'hot' : 'pgvector'} ${JSON.stringify({ partition: s.partition.slice(0, 2), where: s.where, limit: s.limit, min: s.minSimilarity })}`;
    expect(got.map((h) => h.id), what).toEqual(want.map((h) => h.id));
    // pgvector's own float: the same number on both paths, to the bit.
    expect(got.map((h) => h.similarity), what).toEqual(want.map((h) => h.similarity));
  }
  return { hot, total };
}

describe('declared collections, hot = exact SQL', () => {
  it.each(DIMS)('%i dimensions: every filter form, one-row and empty partitions, adversarial rows; then soft deletes, moves and changed embeddings by plain SQL', { timeout: 120_000 }, async (dim) => {
    const first = await check(dim, 'seeded');
    expect(first.hot).toBeGreaterThan(first.total * 0.9); // served from memory, not by pgvector
    // The probe at start found the server's own summation, which the similarity bits above depend on.
    expect(lib.stats().collections[`docs${dim}`]?.arithmetic).toBe((await serverArithmetic(c, dim)).name);

    // Plain SQL, as any writer: soft delete, restore, a move to the one-row partition, new embeddings, NULL.
    await c.query(`UPDATE docs_${dim} SET deleted_at = now() WHERE id IN (10, 11, 12)`);
    await c.query(`UPDATE docs_${dim} SET deleted_at = NULL WHERE id IN (SELECT id FROM docs_${dim} WHERE deleted_at IS NOT NULL AND id > 12 LIMIT 3)`);
    await c.query(`UPDATE docs_${dim} SET tenant_id = $1 WHERE id IN (20, 21)`, [T2]);
    await c.query(`UPDATE docs_${dim} SET tenant_id = $1 WHERE id = 300`, [T3]);
    await c.query(`UPDATE docs_${dim} SET embedding = $1::vector WHERE id = 30`, [literal(queriesByDim.get(dim)![1]!)]);
    await c.query(`UPDATE docs_${dim} SET embedding = NULL WHERE id = 31`);
    await c.query(`UPDATE docs_${dim} SET tag = 'a', score = 33 WHERE id BETWEEN 40 AND 60`);
    await c.query(`DELETE FROM docs_${dim} WHERE id IN (241, 50)`);
    const after = await check(dim, 'after plain-SQL writes');
    expect(after.hot).toBeGreaterThan(after.total * 0.9);
  });
});

describe('the search surfaces', () => {
  const body = (extra: Record<string, unknown> = {}) => ({ partition: { tenantId: T1 }, embedding: unit(queriesByDim.get(384)![0]!), limit: 10, ...extra });

  it('the sidecar route and the remote client answer what the library answers, select fields in Prisma names and types', async () => {
    for (const where of [undefined, { tag: { in: ['a', 'b'] }, at: { lt: new Date(BASE + 150 * 3_600_000).toISOString() } }]) {
      const input = body(where ? { where } : {});
      const local = await lib.collection('docs384').search(input);
      const viaHttp = await remote.collection('docs384').search(input);
      expect(viaHttp).toEqual(local);
      const res = await fetch(`${sc.url}/v1/collections/docs384/search`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(input) });
      expect(res.status).toBe(200);
      const json = (await res.json()) as { results: Array<Record<string, unknown>> };
      expect(json.results.map((r) => r.id)).toEqual(local.map((r) => r.id));
      expect(Object.keys(json.results[0]!).sort()).toEqual(['at', 'id', 'similarity', 'tag', 'title']);
    }
    const [hit] = await lib.collection('docs384').search(body({ limit: 1 }));
    expect(hit!.at).toBeInstanceOf(Date);
    expect(typeof hit!.title).toBe('string');
    const [remoteHit] = await remote.collection('docs384').search(body({ limit: 1 }));
    expect(remoteHit!.at).toBeInstanceOf(Date);
  });

  it.each([
    ['an unknown filter', { where: { color: 'red' } }, 'where.color', /not a declared filter field/],
    ['a filter on the wrong type', { where: { score: 'high' } }, 'where.score', /must be/],
    ['a range on a Boolean', { where: { pinned: { gt: true } } }, 'where.pinned', /must be a value, null, \{ in/],
    ['a bad date', { where: { at: { lt: 'yesterday' } } }, 'where.at.lt', /ISO 8601/],
    ['an empty in-list', { where: { tag: { in: [] } } }, 'where.tag.in', /at least one/],
    ['a wrong dimension', { embedding: [1, 2, 3] }, 'embedding', /384/],
    ['a missing partition key', { partition: {} }, 'partition.tenantId', /./],
    ['an unknown partition key', { partition: { tenantId: T1, other: 'x' } }, 'partition.other', /not a partition field/],
    ['a partition value that is not a UUID', { partition: { tenantId: 'nope' } }, 'partition.tenantId', /UUID/],
    ['a limit past 100', { limit: 101 }, 'limit', /1 to 100/],
    ['a minSimilarity past 1', { minSimilarity: 2 }, 'minSimilarity', /-1 to 1/],
  ])('%s is a 400 naming the field, on every surface', async (_what, patch, field, message) => {
    const input = { ...body(), ...patch } as Parameters<ReturnType<MemorySync['collection']>['search']>[0];
    for (const surface of [lib, remote]) {
      const err = await surface.collection('docs384').search(input).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(ValidationError);
      expect((err as ValidationError).field).toBe(field);
      expect((err as ValidationError).reason).toMatch(message);
    }
    const res = await fetch(`${sc.url}/v1/collections/docs384/search`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(input) });
    expect(res.status).toBe(400);
    expect(await res.json()).toMatchObject({ code: 'validation', field });
  });

  it("memory-sync's own routes are a 404 on a declaration of yours, naming the routes to use", async () => {
    for (const [method, path] of [['GET', '/v1/personalities/6f9619ff-8b86-4011-b42d-00c04fc964ff'], ['POST', '/v1/memories/search'], ['DELETE', '/v1/memories/x']] as const) {
      const res = await fetch(`${sc.url}${path}`, { method, ...(method === 'POST' ? { headers: { 'content-type': 'application/json' }, body: '{}' } : {}) });
      expect(res.status, path).toBe(404);
      expect(await res.json()).toMatchObject({ code: 'not_found', error: expect.stringMatching(/\/v1\/entities/) });
    }
  });

  it('an unknown collection is a 404 on the route', async () => {
    const res = await fetch(`${sc.url}/v1/collections/nope/search`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body()) });
    expect(res.status).toBe(404);
    expect(await res.json()).toMatchObject({ code: 'not_found' });
  });
});
