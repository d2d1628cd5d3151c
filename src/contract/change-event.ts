import { z } from 'zod';
import { uuid } from './primitives.js';

/** Channel the SQL triggers notify on (sql/010_notify.sql). */
export const INVALIDATION_CHANNEL = 'cache_invalidation';


/** Payload contract v1; see README "Notification payload". */
export const invalidationSchema = z
  .object({
    v: z.literal(1),
    table: z.enum(['personalities', 'llm_configs', 'memories']),
    op: z.enum(['INSERT', 'UPDATE', 'DELETE', 'TRUNCATE']),
    scope: z.enum(['rows', 'personalities', 'table']),
    ids: z.array(uuid),
    personalityIds: z.array(uuid),
    txid: z.string().regex(/^\d+$/),
    ts: z.number().finite(),
    chunk: z.number().int().positive(),
    chunks: z.number().int().positive(),
  })
  .refine((p) => p.scope !== 'rows' || (p.ids.length > 0 && p.personalityIds.length > 0), {
    message: 'a rows-scope event names ids and personalityIds',
  })
  .refine((p) => p.chunk <= p.chunks, { message: 'chunk exceeds chunks' });

export type ChangeEvent = z.infer<typeof invalidationSchema>;
/** @deprecated the 0.1 name of ChangeEvent. */
export type InvalidationEvent = ChangeEvent;

export type ParsedPayload =
  | { ok: true; event: ChangeEvent; bytes: number }
  | { ok: false; reason: string; bytes: number; sample: string; structured: boolean };

/** Never throws: a bad payload is a value to count and log, not a crash. */
export function parsePayload(raw: string): ParsedPayload {
  const bytes = Buffer.byteLength(raw);
  const sample = raw.length > 200 ? `${raw.slice(0, 200)}…` : raw;
  let json: unknown;
  try {
    json = JSON.parse(raw);
  } catch (err) {
    return { ok: false, reason: `not JSON: ${(err as Error).message}`, bytes, sample, structured: false };
  }
  const result = invalidationSchema.safeParse(json);
  if (!result.success) {
    const issue = result.error.issues[0];
    const where = issue?.path.length ? issue.path.join('.') : 'payload';
    const structured = typeof json === 'object' && json !== null && !Array.isArray(json);
    return { ok: false, reason: `${where}: ${issue?.message ?? 'invalid'}`, bytes, sample, structured };
  }
  return { ok: true, event: result.data, bytes };
}
