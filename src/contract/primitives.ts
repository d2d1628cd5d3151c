import { z } from 'zod';

/**
 * Checks shared by every boundary (options, environment, HTTP, payloads, bus
 * messages). Defined once so the same bad value gets the same message
 * wherever it comes in.
 */

/** Lower-case canonical UUID, as PostgreSQL prints it (payloads, bus messages). */
export const uuid = z.string().regex(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);

/** A UUID in either case from a caller; lowered so cache keys match the database's spelling. */
export const uuidInput = z
  .string({ error: 'must be a UUID' })
  .regex(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i, 'must be a UUID')
  .transform((s) => s.toLowerCase());

/** postgres:// or postgresql:// with a host (or a ?host= socket directory). */
export const postgresUrl = z
  .string()
  .regex(/^postgres(ql)?:\/\//, 'must start with postgres:// or postgresql://')
  .refine((s) => {
    try {
      return new URL(s).hostname !== '' || /[?&]host=/.test(s);
    } catch {
      return false;
    }
  }, 'is not a valid URL (check the host and a port from 1 to 65535)');

/** Node runs a timer set past 2^31 - 1 ms after 1 ms: a huge interval would spin. */
export const MAX_TIMER_MS = 2_147_483_647;

/** Milliseconds a timer can wait; `min` 0 allows "off". */
export const timerMs = (min = 1) => z.number().int().min(min).max(MAX_TIMER_MS);
