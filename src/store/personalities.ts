import { ConflictError } from '../contract/errors.js';
import type { LlmConfigInput, PersonalityInput } from '../validation/personality.js';
import type { Database, Queryable } from '../backend/queryable.js';

/** An `llm_configs` row, as Prisma returns `LlmConfig`. */
export interface LlmConfigRecord {
  id: string;
  personalityId: string;
  model: string;
  temperature: number;
  maxTokens: number;
  createdAt: Date;
  updatedAt: Date;
}

/**
 * A `personalities` row with its config: what Prisma's
 * `personality.findUnique({ where: { id }, include: { llmConfig: true } })`
 * returns, same keys in the same order, without Prisma (the embedded backend
 * has none).
 */
export interface PersonalityRecord {
  id: string;
  name: string;
  displayName: string;
  systemPrompt: string;
  isActive: boolean;
  createdAt: Date;
  updatedAt: Date;
  llmConfig: LlmConfigRecord | null;
}

interface JoinedRow {
  id: string;
  name: string;
  displayName: string;
  systemPrompt: string;
  isActive: boolean;
  createdAt: Date;
  updatedAt: Date;
  c_id: string | null;
  c_personalityId: string;
  c_model: string;
  c_temperature: number;
  c_maxTokens: number;
  c_createdAt: Date;
  c_updatedAt: Date;
}

const SELECT_PERSONALITY = `
  SELECT p.id, p.name, p."displayName", p."systemPrompt", p."isActive", p."createdAt", p."updatedAt",
         c.id AS c_id, c."personalityId" AS "c_personalityId", c.model AS c_model, c.temperature AS c_temperature,
         c."maxTokens" AS "c_maxTokens", c."createdAt" AS "c_createdAt", c."updatedAt" AS "c_updatedAt"
  FROM personalities p LEFT JOIN llm_configs c ON c."personalityId" = p.id
  WHERE p.id = $1`;

/** The personality with its LLM config (null when it has none), or null when there is no such personality. */
export async function loadPersonality(db: Queryable, id: string): Promise<PersonalityRecord | null> {
  const r = (await db.query<JoinedRow>(SELECT_PERSONALITY, [id])).rows[0];
  if (!r) return null;
  return {
    id: r.id,
    name: r.name,
    displayName: r.displayName,
    systemPrompt: r.systemPrompt,
    isActive: r.isActive,
    createdAt: r.createdAt,
    updatedAt: r.updatedAt,
    llmConfig:
      r.c_id === null
        ? null
        : {
            id: r.c_id,
            personalityId: r.c_personalityId,
            model: r.c_model,
            temperature: r.c_temperature,
            maxTokens: r.c_maxTokens,
            createdAt: r.c_createdAt,
            updatedAt: r.c_updatedAt,
          },
  };
}

/**
 * INSERT ... ON CONFLICT DO UPDATE of the given columns only: an absent
 * optional column takes its default on insert and keeps its value on update.
 * The update runs only when a value differs, so a repeated PUT changes
 * nothing, bumps no updatedAt and notifies no cache. Returns no row then.
 */
function upsertSql(table: string, key: string, columns: Record<string, unknown>): { text: string; values: unknown[] } {
  const names = Object.keys(columns).filter((c) => columns[c] !== undefined);
  const values = names.map((c) => columns[c]);
  const q = (c: string) => `"${c}"`;
  const changed = names.filter((c) => c !== key);
  return {
    text: `INSERT INTO ${table} (${names.map(q).join(', ')}, "updatedAt")
           VALUES (${names.map((_, i) => `$${i + 1}`).join(', ')}, now())
           ON CONFLICT (${q(key)}) DO UPDATE SET ${changed.map((c) => `${q(c)} = EXCLUDED.${q(c)}`).join(', ')}, "updatedAt" = now()
           WHERE (${changed.map((c) => `${table}.${q(c)}`).join(', ')}) IS DISTINCT FROM (${changed.map((c) => `EXCLUDED.${q(c)}`).join(', ')})
           RETURNING (xmax = 0) AS created`,
    values,
  };
}

async function writeLlmConfig(tx: Queryable, id: string, config: LlmConfigInput | null): Promise<void> {
  if (config === null) {
    await tx.query('DELETE FROM llm_configs WHERE "personalityId" = $1', [id]);
    return;
  }
  const { text, values } = upsertSql('llm_configs', 'personalityId', {
    personalityId: id,
    model: config.model,
    temperature: config.temperature,
    maxTokens: config.maxTokens,
  });
  await tx.query(text, values);
}

function isNameConflict(err: unknown): boolean {
  const e = err as { code?: unknown; constraint?: unknown };
  return e.code === '23505' && e.constraint === 'personalities_name_key';
}

/**
 * Creates or updates personality `id` and its LLM config in one transaction
 * and returns the result as loadPersonality() reads it, inside that
 * transaction (the writer reads its own write). `created` is true when the
 * row did not exist. Semantics of absent fields: src/validation/personality.ts.
 * A name another personality has is a ConflictError on `name`.
 */
export async function upsertPersonality(
  db: Database,
  id: string,
  input: PersonalityInput,
): Promise<{ personality: PersonalityRecord; created: boolean }> {
  try {
    return await db.transaction(async (tx) => {
      const { text, values } = upsertSql('personalities', 'id', {
        id,
        name: input.name,
        displayName: input.displayName,
        systemPrompt: input.systemPrompt,
        isActive: input.isActive,
      });
      const created = (await tx.query<{ created: boolean }>(text, values)).rows[0]?.created ?? false;
      if (input.llmConfig !== undefined) await writeLlmConfig(tx, id, input.llmConfig);
      const personality = await loadPersonality(tx, id);
      if (!personality) throw new Error(`personality ${id} vanished inside its own transaction`);
      return { personality, created };
    });
  } catch (err) {
    if (isNameConflict(err)) {
      throw new ConflictError('name', `another personality is already named ${JSON.stringify(input.name)}`);
    }
    throw err;
  }
}

/** Deletes the personality (its config, memories and history cascade). False when there was none. */
export async function deletePersonality(db: Queryable, id: string): Promise<boolean> {
  const r = await db.query('DELETE FROM personalities WHERE id = $1 RETURNING id', [id]);
  return r.rows.length > 0;
}
