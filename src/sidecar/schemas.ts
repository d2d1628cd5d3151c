import { MAX_LIMIT } from '../client/validation.js';
import { EMBEDDING_DIMENSION } from '../embedding.js';

/**
 * Request schemas: the shape is checked before the handler runs. The engine
 * validates again (finite float32 values, non-zero vector, metadata size),
 * so these only need to be at least as strict where they overlap.
 */
const uuid = {
  type: 'string',
  pattern: '^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$',
} as const;
const embedding = { type: 'array', minItems: EMBEDDING_DIMENSION, maxItems: EMBEDDING_DIMENSION, items: { type: 'number' } } as const;
const channelId = { type: 'string', minLength: 1, maxLength: 200 } as const;

export const idParams = { type: 'object', required: ['id'], properties: { id: uuid } } as const;

export const searchBody = {
  type: 'object',
  required: ['personalityId', 'embedding'],
  properties: {
    personalityId: uuid,
    channelId,
    embedding,
    limit: { type: 'integer', minimum: 1, maximum: MAX_LIMIT },
    minSimilarity: { type: 'number', minimum: -1, maximum: 1 },
  },
} as const;

export const storeBody = {
  type: 'object',
  required: ['personalityId', 'channelId', 'content', 'embedding'],
  properties: {
    personalityId: uuid,
    channelId,
    content: { type: 'string', minLength: 1 },
    embedding,
    metadata: { type: ['object', 'null'] },
  },
} as const;
