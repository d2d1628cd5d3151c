import { z } from 'zod';
import type { CollectionShape, EntityShape, FieldShape } from '../contract/shape.js';
import { ValidationError } from '../contract/errors.js';
import { parseEmbedding } from '../embedding.js';
import { parseInput } from './parse.js';
import { MAX_LIMIT, storable } from './memory.js';

/*
 * The inputs of declared entities and collections, built from their shapes:
 * one schema per collection, used by the HTTP routes and the in-process
 * client alike, so the same bad input gets the same message on both paths.
 */

export type ScalarValue = string | number | boolean;
export type Condition =
  | { eq: ScalarValue | null }
  | { in: ScalarValue[] }
  | { notIn: ScalarValue[] }
  | { lt?: ScalarValue; lte?: ScalarValue; gt?: ScalarValue; gte?: ScalarValue };

export interface ParsedSearch {
  /** Partition values' texts, in partitionBy order. */
  partition: string[];
  /** Conditions in filter order, with values as the hot set compares them. */
  where: { field: string; index: number; condition: Condition }[];
  embedding: Float32Array;
  limit: number;
  minSimilarity: number | undefined;
}

const MAX_TEXT = 10_000;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** A value for a field: type-checked and turned into what the comparisons use (DateTime: epoch ms). */
function fieldValue(f: FieldShape) {
  const text = f.uuid
    ? z.string({ error: 'must be a UUID' }).regex(UUID, 'must be a UUID').transform((s) => s.toLowerCase())
    : z.string({ error: `must be a string (${f.name} is ${f.type})` }).max(MAX_TEXT).refine(storable, 'must not contain NUL or unpaired surrogate characters');
  switch (f.type) {
    case 'Int':
      return z.number({ error: 'must be an integer' }).int('must be an integer').min(-2147483648).max(2147483647);
    case 'Float':
      return z.number({ error: 'must be a finite number' }).finite();
    case 'Boolean':
      return z.boolean({ error: 'must be true or false' });
    case 'DateTime':
      return z
        .union([z.string(), z.number()], { error: 'must be an ISO 8601 date-time or epoch milliseconds' })
        .transform((v, ctx) => {
          const ms = typeof v === 'number' ? v : Date.parse(v);
          if (!Number.isFinite(ms)) {
            ctx.addIssue({ code: 'custom', message: 'must be an ISO 8601 date-time or epoch milliseconds' });
            return z.NEVER;
          }
          return ms;
        });
    default:
      return f.canon === 'lower' ? text.transform((s) => s.toLowerCase()) : text;
  }
}

/** A partition value: one exact value of the field. */
function partitionValue(f: FieldShape) {
  if (f.type === 'Int' || f.type === 'BigInt') {
    return z.union([z.number().int(), z.string().regex(/^-?\d{1,19}$/)], { error: 'must be an integer' }).transform(String);
  }
  return fieldValue(f).transform(String);
}

function condition(f: FieldShape) {
  const v = fieldValue(f);
  const list = z.array(v).min(1, 'must list at least one value').max(10_000, 'must list at most 10000 values');
  // An empty notIn excludes nothing (a waterfall's first stage has no ids yet to leave out); an empty in would match nothing.
  const exclusions = z.array(v).max(10_000, 'must list at most 10000 values');
  const ranged = f.type !== 'Boolean';
  const range = z
    .strictObject({ lt: v.optional(), lte: v.optional(), gt: v.optional(), gte: v.optional() })
    .refine((r) => Object.keys(r).length > 0, 'must name lt, lte, gt or gte');
  const forms = `must be a value, null, { in: [...] }, { notIn: [...] }${ranged ? ' or { lt, lte, gt, gte }' : ''}`;
  const isObject = (x: unknown): x is Record<string, unknown> => typeof x === 'object' && x !== null && !Array.isArray(x);
  // The form is told by the value's shape, so a wrong value inside a form gets that form's own message.
  return z.unknown().transform((x, ctx): Condition => {
    let schema: z.ZodType<Condition>;
    if (x === null) return { eq: null };
    if (isObject(x) && 'in' in x) schema = z.strictObject({ in: list }) as z.ZodType<Condition>;
    else if (isObject(x) && 'notIn' in x) schema = z.strictObject({ notIn: exclusions }) as z.ZodType<Condition>;
    else if (isObject(x) && ranged && ['lt', 'lte', 'gt', 'gte'].some((k) => k in x)) schema = range as z.ZodType<Condition>;
    else if (isObject(x) || Array.isArray(x)) {
      ctx.addIssue({ code: 'custom', message: forms });
      return z.NEVER;
    } else schema = v.transform((y) => ({ eq: y })) as z.ZodType<Condition>;
    const r = schema.safeParse(x);
    if (r.success) return r.data;
    for (const issue of r.error.issues) ctx.addIssue({ ...issue, code: 'custom', message: issue.message, path: issue.path } as never);
    return z.NEVER;
  });
}

/** The search body schema of one collection (POST /v1/collections/:collection/search). */
export function searchSchema(shape: CollectionShape) {
  const partition = z.strictObject(
    Object.fromEntries(shape.partitionBy.map((f) => [f.name, partitionValue(f)])),
    { error: `must be an object naming ${shape.partitionBy.map((f) => f.name).join(', ')}` },
  );
  const where = z.strictObject(Object.fromEntries(shape.filters.map((f) => [f.name, condition(f).optional()])), {
    error: 'must be an object of declared filter fields',
  });
  const embedding = z.unknown().transform((value, ctx) => {
    try {
      return parseEmbedding(value, shape.dimension);
    } catch (err) {
      if (!(err instanceof ValidationError)) throw err;
      ctx.addIssue({ code: 'custom', message: err.reason, params: { field: err.field } });
      return z.NEVER;
    }
  });
  const limitMessage = `must be an integer from 1 to ${MAX_LIMIT}`;
  const similarityMessage = 'must be a number from -1 to 1';
  return z.strictObject(
    {
      partition,
      where: where.optional(),
      embedding,
      limit: z.number({ error: limitMessage }).int(limitMessage).min(1, limitMessage).max(MAX_LIMIT, limitMessage).default(5),
      minSimilarity: z.number({ error: similarityMessage }).min(-1, similarityMessage).max(1, similarityMessage).optional(),
    },
    { error: 'must be a JSON object' },
  );
}

export function parseSearch(shape: CollectionShape, schema: ReturnType<typeof searchSchema>, input: unknown): ParsedSearch {
  const r = parseInputStrict(schema, input);
  const where = Object.entries(r.where ?? {})
    .filter(([, c]) => c !== undefined)
    .map(([field, c]) => ({ field, index: shape.filters.findIndex((f) => f.name === field), condition: c as Condition }));
  return {
    partition: shape.partitionBy.map((f) => String((r.partition as Record<string, unknown>)[f.name])),
    where,
    embedding: r.embedding,
    limit: r.limit,
    minSimilarity: r.minSimilarity,
  };
}

/** parseInput, with an unknown key reported under its own name and a missing partition key under its path. */
function parseInputStrict<S extends z.ZodType>(schema: S, input: unknown): z.output<S> {
  const result = schema.safeParse(input);
  if (result.success) return result.data;
  const issue = result.error.issues[0]!;
  if (issue.code === 'unrecognized_keys') {
    const at = [...issue.path, issue.keys[0]!].join('.');
    const what = issue.path[0] === 'where' ? 'is not a declared filter field' : issue.path[0] === 'partition' ? 'is not a partition field' : 'is not a field of this body';
    throw new ValidationError(at, what);
  }
  if (issue.path.length === 0 || issue.code !== 'invalid_union') return parseInput(schema, input);
  throw new ValidationError(issue.path.join('.'), issue.message);
}

/**
 * A lookup's values from a where object: `{ id }`, `{ slug }`, `{ ownerId, name }`,
 * or Prisma's compound key `{ ownerId_name: { ownerId, name } }`. Returns the
 * lookup's index and values, or throws a ValidationError saying which lookups exist.
 */
export function parseLookup(shape: EntityShape, where: unknown, field = 'where'): { index: number; values: unknown[] } {
  if (typeof where !== 'object' || where === null || Array.isArray(where)) {
    throw new ValidationError(field, `must be an object naming one lookup: ${lookupList(shape)}`);
  }
  let w = where as Record<string, unknown>;
  const keys = Object.keys(w);
  const compound = keys.length === 1 ? shape.lookups.findIndex((l) => l.fields.length > 1 && l.name === keys[0]) : -1;
  if (compound >= 0) w = (w[keys[0]!] ?? {}) as Record<string, unknown>;
  const have = Object.keys(w);
  const index = shape.lookups.findIndex((l) => l.fields.length === have.length && l.fields.every((f) => have.includes(f)));
  if (index < 0) throw new ValidationError(field, `must name exactly one lookup: ${lookupList(shape)}`);
  const lookup = shape.lookups[index]!;
  const values = lookup.fields.map((f) => {
    const fs = shape.root.fields.find((x) => x.name === f)!;
    return lookupValue(fs, w[f], `${field}.${f}`);
  });
  return { index, values };
}

/** A lookup from an id value (a single-field id) or a where object. */
export function lookupFrom(shape: EntityShape, where: unknown): { index: number; values: unknown[] } {
  if (typeof where === 'string' || typeof where === 'number' || typeof where === 'bigint') {
    const id = shape.lookups[0]!.fields;
    if (id.length !== 1) throw new ValidationError('id', `${shape.name} has a compound id: look it up with { ${id.join(', ')} }`);
    return parseLookup(shape, { [id[0]!]: where }, 'id');
  }
  return parseLookup(shape, where);
}

function lookupList(shape: EntityShape): string {
  return shape.lookups.map((l) => `{ ${l.fields.join(', ')} }`).join(' or ');
}

/** One lookup value, checked against the field's type ("42" is accepted for an Int, from a query string). */
export function lookupValue(f: FieldShape, v: unknown, field: string): string | number | bigint {
  if (f.type === 'Int' || f.type === 'BigInt') {
    const s = typeof v === 'number' || typeof v === 'bigint' ? String(v) : v;
    if (typeof s !== 'string' || !/^-?\d{1,19}$/.test(s)) throw new ValidationError(field, 'must be an integer');
    if (f.type === 'Int') {
      const n = Number(s);
      if (n < -2147483648 || n > 2147483647) throw new ValidationError(field, 'must be a 32-bit integer');
      return n;
    }
    return BigInt(s);
  }
  if (typeof v !== 'string' || v.length === 0 || v.length > MAX_TEXT || !storable(v)) {
    throw new ValidationError(field, `must be a non-empty string of at most ${MAX_TEXT} characters`);
  }
  if (f.uuid) {
    if (!UUID.test(v)) throw new ValidationError(field, 'must be a UUID');
    return v.toLowerCase();
  }
  return v;
}
