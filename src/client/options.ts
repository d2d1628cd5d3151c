import { z } from 'zod';
import type { Logger } from 'pino';
import { ConfigError } from '../errors.js';

// Node runs a timer set past 2^31 - 1 ms after 1 ms: a huge interval would spin.
const MAX_TIMER_MS = 2_147_483_647;
const ms = z.number().int().nonnegative().max(MAX_TIMER_MS);
const positive = z.number().int().positive();
const timer = positive.max(MAX_TIMER_MS);

export const optionsSchema = z.object({
  databaseUrl: z.string().regex(/^postgres(ql)?:\/\//, 'must be a postgres:// or postgresql:// URL'),
  poolSize: positive.max(20).default(10),
  listener: z
    .object({
      /** LISTEN through another URL, e.g. a direct connection when the pool goes through PgBouncer. */
      databaseUrl: z.string().regex(/^postgres(ql)?:\/\//, 'must be a postgres:// or postgresql:// URL').optional(),
      paranoidIntervalMs: timer.default(5_000),
      queryTimeoutMs: timer.default(3_000),
      retryMinMs: timer.default(100),
      retryMaxMs: timer.default(5_000),
    })
    .prefault({}),
  personalities: z
    .object({
      max: positive.default(1_000),
      ttlMs: timer.default(300_000),
      negativeTtlMs: timer.default(5_000),
    })
    .prefault({}),
  hotSets: z
    .object({
      maxBytes: positive.default(256 * 1024 * 1024),
      maxVectorsPerSet: positive.default(20_000),
      tooLargeTtlMs: timer.default(60_000),
    })
    .prefault({}),
  ivfflatProbes: positive.max(50).default(1),
  /** Client-side limit for one pool query: a half-open socket fails instead of hanging. */
  queryTimeoutMs: timer.default(30_000),
  retry: z
    .object({
      retries: z.number().int().min(0).max(20).default(5),
      minTimeoutMs: timer.default(50),
      maxTimeoutMs: timer.default(2_000),
    })
    .prefault({}),
  summaryIntervalMs: ms.default(60_000),
});

type Deep<T> = { [K in keyof T]?: T[K] extends object ? Partial<T[K]> : T[K] };
export type ResolvedOptions = z.output<typeof optionsSchema>;

export interface MemorySyncOptions extends Deep<Omit<ResolvedOptions, 'databaseUrl'>> {
  /** Defaults to DATABASE_URL. */
  databaseUrl?: string;
  /** pino logger; defaults to a silent one. */
  logger?: Logger;
  /** Test hooks, to make races deterministic. */
  hooks?: {
    /** Runs after a personality load has read the database, before the cache stores it. */
    afterPersonalityRead?: (id: string) => Promise<void> | void;
    beforeHotSetPublish?: (personalityId: string) => Promise<void> | void;
  };
}

/** Validates options; the error names the offending option. */
export function resolveOptions(options: MemorySyncOptions): ResolvedOptions {
  const { logger: _l, hooks: _h, ...rest } = options;
  const input = { ...rest, databaseUrl: rest.databaseUrl ?? process.env.DATABASE_URL };
  const result = optionsSchema.safeParse(input);
  if (!result.success) {
    const issue = result.error.issues[0]!;
    throw new ConfigError(`options.${issue.path.join('.')}`, issue.message);
  }
  return result.data;
}
