import { createHash } from 'node:crypto';
import { z } from 'zod';
import { changeEventSchema, type ChangeEvent } from './change-event.js';

/*
 * Fleet mode: relays LISTEN and publish each change to a bus (NATS JetStream
 * or Redis Streams); every host reads the bus instead of holding a LISTEN
 * connection. The bus numbers what it keeps with contiguous sequences
 * (1, 2, 3, ... per stream incarnation), so a subscriber that remembers the
 * last sequence it applied can resume at last + 1 and prove it missed
 * nothing, or know that it did.
 */

/** Barrier tokens become message ids (NATS header values): no spaces or line breaks. */
export const barrierToken = z.string().regex(/^[A-Za-z0-9_.:-]{1,128}$/, 'must be 1 to 128 letters, digits, _ . : or -');

/**
 * What travels on the bus, one JSON object per message. The single source of
 * truth for both engines; `v` lets a newer relay add kinds that an older
 * subscriber reads as invalid (and flushes on) rather than ignores.
 */
export const busMessageSchema = z.discriminatedUnion('kind', [
  /**
   * A change event exactly as the trigger sent it. `at` (replication relays):
   * the commit position (16 hex digits) and the event's index in its
   * transaction, so a republish after a crash or failover has the same id.
   */
  z.object({ v: z.literal(1), kind: z.literal('change'), event: changeEventSchema, at: z.string().regex(/^[0-9A-F]{16}\.\d{1,9}$/).optional() }),
  /** A sync() barrier token that came through PostgreSQL after every change committed before it. */
  z.object({ v: z.literal(1), kind: z.literal('barrier'), token: barrierToken }),
  /** A notification on the change channel that a relay could not read but that may be a change in a newer format: subscribers flush. */
  z.object({
    v: z.literal(1),
    kind: z.literal('invalid'),
    reason: z.string().max(1000),
    sample: z.string().max(1000),
    bytes: z.number().int().nonnegative(),
  }),
  /**
   * A relay may have missed notifications (it started, or its LISTEN
   * connection came back after an outage): subscribers flush. `relay` and
   * `n` make the id unique, so two relays' gaps are two messages.
   */
  z.object({
    v: z.literal(1),
    kind: z.literal('gap'),
    reason: z.string().max(1000),
    relay: z.string().regex(/^[A-Za-z0-9_-]{1,64}$/),
    n: z.number().int().nonnegative(),
  }),
]);

export type BusMessage = z.infer<typeof busMessageSchema>;

export const changeMessage = (event: ChangeEvent, at?: string): BusMessage => (at === undefined ? { v: 1, kind: 'change', event } : { v: 1, kind: 'change', event, at });
export const barrierMessage = (token: string): BusMessage => ({ v: 1, kind: 'barrier', token });

/** Object keys sorted at every level, so the same event hashes the same in every relay. */
function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`;
  }
  return JSON.stringify(value);
}

const digest = (s: string): string => createHash('sha256').update(s).digest('base64url').slice(0, 16);

/**
 * The message id the bus deduplicates on, the same in every relay.
 *
 * change: `c.<txid>.<model>.<op>.<chunk>.<digest>`. The digest (96 bits of
 * SHA-256 over the canonical event) is there because txid/table/op/chunk
 * alone do not name one event: two `INSERT`s into `memories` in one
 * transaction send two different events with equal txid, model, op and chunk,
 * and the second would be dropped as a duplicate. PostgreSQL already folds
 * identical payloads within a transaction, so hashing the whole event drops
 * nothing it would have delivered.
 *
 * change read from a replication slot: `r.<commit position>.<index>.<digest>`,
 * the same whichever relay reads the slot and however often.
 *
 * barrier: the token itself. invalid: a digest of what was received.
 * gap: `g.<relay>.<n>`.
 */
export function busMessageId(m: BusMessage): string {
  switch (m.kind) {
    case 'change': {
      const e = m.event;
      if (m.at !== undefined) return `r.${m.at}.${digest(canonicalJson(e))}`;
      return `c.${e.txid}.${e.model}.${e.op}.${e.chunk}.${digest(canonicalJson(e))}`;
    }
    case 'barrier':
      return m.token;
    case 'invalid':
      return `i.${digest(`${m.bytes}:${m.reason}:${m.sample}`)}`;
    case 'gap':
      return `g.${m.relay}.${m.n}`;
  }
}

export type ParsedBusMessage =
  | { ok: true; message: BusMessage }
  | { ok: false; reason: string; sample: string; bytes: number };

/** Never throws: a bad message on the stream is a value to count (and flush on), not a crash. */
export function parseBusMessage(raw: string): ParsedBusMessage {
  const bytes = Buffer.byteLength(raw);
  const sample = raw.length > 200 ? `${raw.slice(0, 200)}…` : raw;
  let json: unknown;
  try {
    json = JSON.parse(raw);
  } catch (err) {
    return { ok: false, reason: `bus message is not JSON: ${(err as Error).message}`, sample, bytes };
  }
  const result = busMessageSchema.safeParse(json);
  if (!result.success) {
    const issue = result.error.issues[0];
    const where = issue?.path.length ? issue.path.join('.') : 'message';
    return { ok: false, reason: `bus message ${where}: ${issue?.message ?? 'invalid'}`, sample, bytes };
  }
  return { ok: true, message: result.data };
}
