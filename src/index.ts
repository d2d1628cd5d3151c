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
export { defineConfig, type Declaration } from './schema/declaration.js';
export type { EntityClient, CollectionClient, CollectionSearch, CollectionHit, EntityWhere, EntityValue } from './contract/client.js';
export { EMBEDDING_DIMENSION } from './embedding.js';
export {
  MemorySyncError,
  ValidationError,
  DatabaseUnavailableError,
  QueryError,
  NotFoundError,
  ConfigError,
  ConflictError,
  PermanentError,
  NotMigratedError,
  UnauthorizedError,
  ForbiddenError,
  HTTP_STATUS,
  type ErrorCode,
} from './contract/errors.js';
export { DEFAULTS } from './client/options.js';
export { CacheCore, type ChangeAction, type ChangeInfo, type SearchOutcome } from './cache/core.js';
export type { ChangeSource, ChangeSourceEvents, SourceState, UpInfo } from './sources/source.js';
export { PgListenSource } from './sources/pg-listen.js';
export { DEFAULT_CHANNEL, parsePayload, type ChangeEvent } from './contract/change-event.js';
export { migrate } from './migrations/migrate.js';
export { checkMigrations, PROTECTED_INDEXES } from './migrations/check-migrations.js';
export { createSidecarClient, SidecarClient, type SidecarClientOptions } from './client/sidecar-client.js';
export { memorySyncExtension } from './client/prisma-extension.js';
export type { PersonalityInput } from './validation/personality.js';
export { BusSource } from './sources/bus-source.js';
export { ReplicationSource, type ReplicationSourceOptions, type ReplicationStats } from './sources/replication/source.js';
export type { DecodedChange, DecodedTransaction, EventMapper } from './sources/replication/types.js';
export { uninstallCapture, type CaptureTable, type ReplicaIdentity } from './capture/replication.js';
