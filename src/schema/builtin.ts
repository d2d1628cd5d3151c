import { DEFAULT_SCHEMA_PATH } from '../paths.js';
import type { Declaration } from './declaration.js';

/**
 * memory-sync's own schema (prisma/schema.prisma), declared as a bot would
 * declare its own. The only place that names memory-sync's own models and
 * fields: everything else (the personality API, findSimilarMemories, the
 * jobs) runs on the binding made from this.
 */
export const BUILTIN_DECLARATION = {
  schema: DEFAULT_SCHEMA_PATH,
  channel: 'memory_sync',
  entities: {
    personality: { model: 'Personality', include: { llmConfig: true } },
  },
  collections: {
    memories: {
      model: 'Memory',
      embedding: 'embedding',
      dimension: 1536,
      partitionBy: ['personalityId'],
      filters: ['channelId'],
      select: ['content', 'channelId', 'createdAt', 'metadata'],
      index: { name: 'idx_memories_embedding', method: 'ivfflat', lists: 50 },
    },
  },
  jobs: {
    historyTtl: { model: 'ConversationHistory', field: 'createdAt', days: 30 },
    memoryCap: { collection: 'memories', per: ['personalityId', 'channelId'], keep: 1000, orderBy: 'createdAt' },
  },
} as const satisfies Declaration;

/** Names the built-in API uses (kept next to the declaration they refer to). */
export const BUILTIN = {
  personality: 'personality',
  personalityModel: 'Personality',
  llmConfigModel: 'LlmConfig',
  memories: 'memories',
  memoryModel: 'Memory',
} as const;
