import { z } from 'zod';

/** The NOTIFY channel of the generated triggers unless the declaration names another. */
export const DEFAULT_CHANNEL = 'memory_sync';

/** sync() markers travel on the change channel's own barrier channel. */
export const barrierChannel = (channel: string): string => `${channel}_barrier`;

/** A key value as PostgreSQL prints it (`col::text`), or null. */
const value = z.string().max(8_000).nullable();
const tuple = z.array(value).max(64);

/**
 * Change event v2, as the generated triggers send it (docs/reference.md,
 * "Change payload") and every change source delivers it. It names a Prisma
 * model and Prisma fields, never a table or a column, and carries keys,
 * never rows:
 * - `rows`: for each new row image (INSERT, UPDATE), the values of `fields`
 *   (the id first, then join, lookup and partition fields);
 * - `gone`: for each row that left (DELETE, or an UPDATE that changed its
 *   id), its id fields' values;
 * - scope `partitions`: too many rows to name; `rows` holds the partition
 *   tuples of `fields` instead. Scope `model`: everything of the model.
 * `ms` marks it as memory-sync's own: another program's payloads on the
 * channel have no `ms` and are ignored, never flushed on.
 */
export const changeEventSchema = z
  .object({
    ms: z.literal(2),
    model: z.string().regex(/^[A-Za-z][A-Za-z0-9_]{0,127}$/),
    op: z.enum(['INSERT', 'UPDATE', 'DELETE', 'TRUNCATE']),
    scope: z.enum(['rows', 'partitions', 'model']),
    fields: z.array(z.string().regex(/^[A-Za-z][A-Za-z0-9_]{0,127}$/)).max(64),
    rows: z.array(tuple).max(10_000),
    gone: z.array(tuple).max(10_000),
    txid: z.string().regex(/^\d+$/),
    ts: z.number().finite(),
    chunk: z.number().int().positive(),
    chunks: z.number().int().positive(),
  })
  .refine((e) => e.rows.every((t) => t.length === e.fields.length), { message: 'every row has one value per field' })
  .refine((e) => e.scope !== 'model' || (e.rows.length === 0 && e.gone.length === 0), { message: 'a model-scope event names no rows' })
  .refine((e) => e.chunk <= e.chunks, { message: 'chunk exceeds chunks' });

export type ChangeEvent = z.infer<typeof changeEventSchema>;

export type ParsedPayload =
  | { ok: true; event: ChangeEvent; bytes: number }
  /** `ours`: it says it is memory-sync's (`ms`) but cannot be read: a newer or broken trigger, so caches flush. */
  | { ok: false; reason: string; bytes: number; sample: string; ours: boolean };

/** Never throws: a bad payload is a value to count and log, not a crash. */
export function parsePayload(raw: string): ParsedPayload {
  const bytes = Buffer.byteLength(raw);
  const sample = raw.length > 200 ? `${raw.slice(0, 200)}…` : raw;
  let json: unknown;
  try {
    json = JSON.parse(raw);
  } catch (err) {
    return { ok: false, reason: `not JSON: ${(err as Error).message}`, bytes, sample, ours: false };
  }
  const ours = typeof json === 'object' && json !== null && !Array.isArray(json) && 'ms' in json;
  if (!ours) return { ok: false, reason: 'not a memory-sync payload (no "ms" key)', bytes, sample, ours: false };
  const result = changeEventSchema.safeParse(json);
  if (!result.success) {
    const issue = result.error.issues[0];
    const where = issue?.path.length ? issue.path.join('.') : 'payload';
    return { ok: false, reason: `${where}: ${issue?.message ?? 'invalid'}`, bytes, sample, ours: true };
  }
  return { ok: true, event: result.data, bytes };
}
