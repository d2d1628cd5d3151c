export { createMemorySync, MemorySync } from './client/memory-sync.js';
export type {
  MemoryClient,
  MemorySyncEvents,
  MemorySyncStats,
  InvalidationAction,
  InvalidationInfo,
  PersonalityWithConfig,
  SimilarMemory,
  SearchInput,
  StoreInput,
} from './client/memory-sync.js';
export type { MemorySyncOptions } from './client/options.js';
export { EMBEDDING_DIMENSION } from './embedding.js';
export {
  MemorySyncError,
  ValidationError,
  DatabaseUnavailableError,
  QueryError,
  NotFoundError,
  ConfigError,
} from './errors.js';
export { INVALIDATION_CHANNEL, parsePayload, type InvalidationEvent } from './listener/payload.js';
export { migrate } from './db/migrate.js';
export { checkMigrations, PROTECTED_INDEXES } from './db/check-migrations.js';
export { createSidecarClient, SidecarClient, type SidecarClientOptions } from './client/sidecar-client.js';
