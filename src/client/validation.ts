import { assertUuid, parseEmbedding } from '../embedding.js';
import { ValidationError } from '../errors.js';

export interface SearchInput {
  personalityId: string;
  channelId?: string;
  embedding: number[] | Float32Array;
  limit?: number;
  minSimilarity?: number;
}

export interface StoreInput {
  personalityId: string;
  channelId: string;
  content: string;
  embedding: number[] | Float32Array;
  metadata?: Record<string, unknown> | null;
}

export const MAX_LIMIT = 100;
const MAX_CONTENT = 100_000;
const MAX_METADATA_BYTES = 64 * 1024;

const MAX_METADATA_DEPTH = 32;
// NUL cannot be stored in PostgreSQL text or jsonb; a lone surrogate would be
// stored as U+FFFD, i.e. not what was sent.
const UNSTORABLE = /\u0000|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

function text(value: string, field: string): string {
  if (UNSTORABLE.test(value)) throw new ValidationError(field, 'must not contain NUL or unpaired surrogate characters');
  return value;
}

function channel(value: unknown, field: string): string {
  if (typeof value !== 'string' || value.length === 0 || value.length > 200) {
    throw new ValidationError(field, 'must be a non-empty string of at most 200 characters');
  }
  return text(value, field);
}

/** Depth and strings checked without recursion: a 5,000-deep object must be a 400, not a stack overflow. */
function checkMetadata(root: object): void {
  const stack: Array<[unknown, number]> = [[root, 1]];
  while (stack.length) {
    const [value, depth] = stack.pop()!;
    if (typeof value === 'string') text(value, 'metadata');
    if (typeof value !== 'object' || value === null) continue;
    if (depth > MAX_METADATA_DEPTH) throw new ValidationError('metadata', `must nest at most ${MAX_METADATA_DEPTH} levels deep`);
    for (const [k, v] of Object.entries(value)) {
      text(k, 'metadata');
      stack.push([v, depth + 1]);
    }
  }
}

function obj(input: unknown): Record<string, unknown> {
  if (typeof input !== 'object' || input === null || Array.isArray(input)) {
    throw new ValidationError('input', 'must be an object');
  }
  return input as Record<string, unknown>;
}

export function validateSearch(input: unknown) {
  const i = obj(input);
  const limit = i.limit ?? 5;
  if (typeof limit !== 'number' || !Number.isInteger(limit) || limit < 1 || limit > MAX_LIMIT) {
    throw new ValidationError('limit', `must be an integer from 1 to ${MAX_LIMIT}`);
  }
  const min = i.minSimilarity;
  if (min !== undefined && (typeof min !== 'number' || !Number.isFinite(min) || min < -1 || min > 1)) {
    throw new ValidationError('minSimilarity', 'must be a number from -1 to 1');
  }
  return {
    personalityId: assertUuid(i.personalityId, 'personalityId'),
    channelId: i.channelId === undefined ? undefined : channel(i.channelId, 'channelId'),
    embedding: parseEmbedding(i.embedding),
    limit,
    minSimilarity: min as number | undefined,
  };
}

export function validateStore(input: unknown) {
  const i = obj(input);
  if (typeof i.content !== 'string' || i.content.length === 0 || i.content.length > MAX_CONTENT) {
    throw new ValidationError('content', `must be a non-empty string of at most ${MAX_CONTENT} characters`);
  }
  let metadata: unknown = i.metadata ?? undefined;
  if (metadata !== undefined) {
    if (typeof metadata !== 'object' || Array.isArray(metadata)) {
      throw new ValidationError('metadata', 'must be a JSON object');
    }
    checkMetadata(metadata as object);
    let json: string;
    try {
      json = JSON.stringify(metadata);
    } catch (err) {
      throw new ValidationError('metadata', `must be plain JSON (${(err as Error).message})`);
    }
    if (Buffer.byteLength(json) > MAX_METADATA_BYTES) {
      throw new ValidationError('metadata', `must serialize to at most ${MAX_METADATA_BYTES} bytes`);
    }
    metadata = JSON.parse(json); // what PostgreSQL will store, not what the caller holds
  }
  return {
    personalityId: assertUuid(i.personalityId, 'personalityId'),
    channelId: channel(i.channelId, 'channelId'),
    content: text(i.content, 'content'),
    embedding: parseEmbedding(i.embedding),
    metadata,
  };
}
