import type { Database, Queryable } from '../backend/queryable.js';
import type { PersonalityWithConfig } from '../contract/client.js';
import { ConflictError } from '../contract/errors.js';
import type { Binding, ModelBinding } from '../schema/binding.js';
import { BUILTIN } from '../schema/builtin.js';
import type { LlmConfigInput, PersonalityInput } from '../validation/personality.js';
import type { EntityLoader } from './entities.js';
import { ident, model, table } from './sql.js';

/*
 * The built-in personality writes (PUT/DELETE /v1/personalities/:id), on the
 * built-in binding: the columns come from it, as for every other statement.
 */

/** A personality with its config, as Prisma's findUnique with `include: { llmConfig: true }` returns it (the client contract's type). */
export type PersonalityRecord = PersonalityWithConfig;

const c = (m: ModelBinding, field: string) => ident(m.fields.get(field)!.column);

/**
 * INSERT ... ON CONFLICT DO UPDATE of the given fields only: an absent
 * optional field takes its default on insert and keeps its value on update.
 * The update runs only when a value differs, so a repeated PUT changes
 * nothing, bumps no updatedAt and notifies no cache. Returns no row then.
 */
function upsertSql(m: ModelBinding, key: string, fields: Record<string, unknown>): { text: string; values: unknown[] } {
  const names = Object.keys(fields).filter((f) => fields[f] !== undefined);
  const values = names.map((f) => fields[f]);
  const changed = names.filter((f) => f !== key);
  const updatedAt = c(m, 'updatedAt');
  const t = table(m);
  return {
    text: `INSERT INTO ${t} (${names.map((f) => c(m, f)).join(', ')}, ${updatedAt})
           VALUES (${names.map((_, i) => `$${i + 1}`).join(', ')}, now())
           ON CONFLICT (${c(m, key)}) DO UPDATE SET ${changed.map((f) => `${c(m, f)} = EXCLUDED.${c(m, f)}`).join(', ')}, ${updatedAt} = now()
           WHERE (${changed.map((f) => `${t}.${c(m, f)}`).join(', ')}) IS DISTINCT FROM (${changed.map((f) => `EXCLUDED.${c(m, f)}`).join(', ')})
           RETURNING (xmax = 0) AS created`,
    values,
  };
}

export class PersonalityStore {
  private readonly personality: ModelBinding;
  private readonly llmConfig: ModelBinding;

  constructor(
    binding: Binding,
    private readonly loader: EntityLoader,
  ) {
    this.personality = model(binding, BUILTIN.personalityModel);
    this.llmConfig = model(binding, BUILTIN.llmConfigModel);
  }

  private async writeLlmConfig(tx: Queryable, id: string, config: LlmConfigInput | null): Promise<void> {
    const m = this.llmConfig;
    if (config === null) {
      await tx.query(`DELETE FROM ${table(m)} WHERE ${c(m, 'personalityId')} = $1`, [id]);
      return;
    }
    const { text, values } = upsertSql(m, 'personalityId', {
      personalityId: id,
      model: config.model,
      temperature: config.temperature,
      maxTokens: config.maxTokens,
    });
    await tx.query(text, values);
  }

  /**
   * Creates or updates personality `id` and its LLM config in one
   * transaction and returns it as the entity loader reads it, inside that
   * transaction (the writer reads its own write). A name another personality
   * has is a ConflictError on `name`.
   */
  async upsert(db: Database, id: string, input: PersonalityInput): Promise<{ personality: PersonalityRecord; created: boolean }> {
    try {
      return await db.transaction(async (tx) => {
        const { text, values } = upsertSql(this.personality, 'id', {
          id,
          name: input.name,
          displayName: input.displayName,
          systemPrompt: input.systemPrompt,
          isActive: input.isActive,
        });
        const created = (await tx.query<{ created: boolean }>(text, values)).rows[0]?.created ?? false;
        if (input.llmConfig !== undefined) await this.writeLlmConfig(tx, id, input.llmConfig);
        const personality = (await this.loader.load(tx, 0, [id])) as PersonalityRecord | null;
        if (!personality) throw new Error(`personality ${id} vanished inside its own transaction`);
        return { personality, created };
      });
    } catch (err) {
      const e = err as { code?: unknown; detail?: unknown };
      if (e.code === '23505' && typeof e.detail === 'string' && e.detail.includes(`(${this.personality.fields.get('name')!.column})`)) {
        throw new ConflictError('name', `another personality is already named ${JSON.stringify(input.name)}`);
      }
      throw err;
    }
  }

  /** Deletes the personality (its config, memories and history cascade). False when there was none. */
  async delete(db: Queryable, id: string): Promise<boolean> {
    const m = this.personality;
    const r = await db.query(`DELETE FROM ${table(m)} WHERE ${c(m, 'id')} = $1 RETURNING 1`, [id]);
    return r.rows.length > 0;
  }
}
