import type { Binding } from '../schema/binding.js';
import { triggerScript } from './triggers.js';

/** The migration directory that carries the built-in declaration's triggers. */
export const BUILTIN_CAPTURE_MIGRATION = '20261201000000_declared_capture';

/**
 * prisma/migrations/<BUILTIN_CAPTURE_MIGRATION>/migration.sql: the triggers
 * generated from the built-in declaration, replacing memory-sync 0.1's
 * hand-written ones (v1 payloads on `cache_invalidation`). A test keeps the
 * file equal to this.
 */
export function builtinCaptureMigration(binding: Binding): string {
  return `-- memory-sync 0.2: change capture generated from the built-in declaration (src/schema/builtin.ts).
-- The triggers keep their names, so CREATE OR REPLACE TRIGGER replaces 0.1's; its function goes after.
${triggerScript(binding)}
DROP FUNCTION IF EXISTS memory_sync_notify();
`;
}
