import { z } from 'zod';
import { parseEmbedding } from '../embedding.js';
import { ValidationError } from '../contract/errors.js';
import { parseInput } from './parse.js';
import { uuidInput } from '../contract/primitives.js';

// The input types (SearchInput, StoreInput) are the client contract's: src/contract/client.ts.

export const MAX_LIMIT = 100;
const MAX_CONTENT = 100_000;
const MAX_CHANNEL = 200;
const MAX_METADATA_BYTES = 64 * 1024;
const MAX_METADATA_DEPTH = 32;

// NUL cannot be stored in PostgreSQL text or jsonb; a lone surrogate would be
// stored as U+FFFD, i.e. not what was sent.
const UNSTORABLE = /\u0000|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;
const UNSTORABLE_MESSAGE = 'must not contain NUL or unpaired surrogate characters';
export const storable = (s: string): boolean => !UNSTORABLE.test(s);

/** A string PostgreSQL stores exactly as sent, `min`..`max` characters, one message for every way it can be wrong. */
export const text = (min: number, max: number) => {
  const message = min > 0 ? `must be a non-empty string of at most ${max} characters` : `must be a string of at most ${max} characters`;
  return z.string({ error: message }).min(min, { error: message }).max(max, { error: message }).refine(storable, { error: UNSTORABLE_MESSAGE });
};

const channelId = text(1, MAX_CHANNEL);
const limitMessage = `must be an integer from 1 to ${MAX_LIMIT}`;
const limit = z.number({ error: limitMessage }).int({ error: limitMessage }).min(1, { error: limitMessage }).max(MAX_LIMIT, { error: limitMessage });
const similarityMessage = 'must be a number from -1 to 1';
const minSimilarity = z.number({ error: similarityMessage }).min(-1, { error: similarityMessage }).max(1, { error: similarityMessage });

/** Length, finiteness, float32 range and a usable norm: src/embedding.ts decides, this reports it under its field. */
const embedding = z.unknown().transform((value, ctx) => {
  try {
    return parseEmbedding(value);
  } catch (err) {
    if (!(err instanceof ValidationError)) throw err;
    ctx.addIssue({ code: 'custom', message: err.reason, params: { field: err.field } });
    return z.NEVER;
  }
});

/** Depth and strings checked without recursion: a 5,000-deep object must be a 400, not a stack overflow. */
function metadataProblem(root: object): string | undefined {
  const stack: Array<[unknown, number]> = [[root, 1]];
  while (stack.length) {
    const [value, depth] = stack.pop()!;
    if (typeof value === 'string' && !storable(value)) return UNSTORABLE_MESSAGE;
    if (typeof value !== 'object' || value === null) continue;
    if (depth > MAX_METADATA_DEPTH) return `must nest at most ${MAX_METADATA_DEPTH} levels deep`;
    for (const [k, v] of Object.entries(value)) {
      if (!storable(k)) return UNSTORABLE_MESSAGE;
      stack.push([v, depth + 1]);
    }
  }
  return undefined;
}

/** A JSON object, returned as PostgreSQL will store it (not as the caller holds it). */
const metadata = z.unknown().transform((value, ctx) => {
  if (value === undefined || value === null) return undefined;
  const fail = (message: string) => {
    ctx.addIssue({ code: 'custom', message });
    return z.NEVER;
  };
  if (typeof value !== 'object' || Array.isArray(value)) return fail('must be a JSON object');
  const problem = metadataProblem(value);
  if (problem) return fail(problem);
  let json: string;
  try {
    json = JSON.stringify(value);
  } catch (err) {
    return fail(`must be plain JSON (${(err as Error).message})`);
  }
  if (Buffer.byteLength(json) > MAX_METADATA_BYTES) return fail(`must serialize to at most ${MAX_METADATA_BYTES} bytes`);
  return JSON.parse(json) as unknown;
});

const body = { error: 'must be a JSON object' };

export const searchSchema = z.object(
  {
    personalityId: uuidInput,
    channelId: channelId.optional(),
    embedding,
    limit: limit.default(5),
    minSimilarity: minSimilarity.optional(),
  },
  body,
);

export const storeSchema = z.object(
  {
    personalityId: uuidInput,
    channelId,
    content: text(1, MAX_CONTENT),
    embedding,
    metadata: metadata.optional(),
  },
  body,
);

export type SearchQuery = z.output<typeof searchSchema>;
export type NewMemoryInput = z.output<typeof storeSchema>;

export const validateSearch = (input: unknown): SearchQuery => parseInput(searchSchema, input);
export const validateStore = (input: unknown): NewMemoryInput => parseInput(storeSchema, input);
/** An id from a caller (path parameter or argument), lowered. */
export const validateId = (value: unknown, field = 'id'): string => parseInput(z.object({ [field]: uuidInput }), { [field]: value })[field] as string;
