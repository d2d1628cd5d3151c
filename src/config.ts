import { isIP } from 'node:net';
import { z } from 'zod';
import { resolveOptions, type MemorySyncOptions, type ResolvedOptions } from './client/options.js';
import { ConfigError } from './contract/errors.js';
import { parseBusUrl } from './sources/bus/bus.js';
import { MAX_TIMER_MS, postgresUrl } from './contract/primitives.js';

export type Env = Record<string, string | undefined>;

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

export interface JobsConfig {
  /** Overrides the declared history TTL (`jobs.historyTtl.days`); 0 turns it off; undefined keeps the declared one. */
  historyTtlDays: number | undefined;
  /** Overrides the declared memory cap (`jobs.memoryCap.keep`); 0 turns it off; undefined keeps the declared one. */
  memoryCap: number | undefined;
  /** Rows per DELETE statement. */
  batchSize: number;
  /** Period of the retention jobs; 0 runs them at start-up only. */
  intervalMs: number;
  /** Period of the vector-index check; 0 checks at start-up only. */
  indexGuardIntervalMs: number;
}

/** Who may call the sidecar's HTTP API (the rule is in src/sidecar/auth.ts). */
export interface AuthConfig {
  /** MEMORY_SYNC_TOKEN: every route. Undefined: no route asks for a token (allowed on loopback, or with `insecure`). */
  token: string | undefined;
  /** MEMORY_SYNC_READ_TOKEN: lookups, search, sync, the event stream and metrics; no writes. */
  readToken: string | undefined;
  /** MEMORY_SYNC_METRICS_OPEN: /metrics answers without a token (for a scraper on the private network). */
  metricsOpen: boolean;
  /** MEMORY_SYNC_INSECURE: serve a non-loopback address without a token (warned at every start). */
  insecure: boolean;
}

export interface SidecarConfig {
  /** PostgreSQL; undefined runs on the embedded database in `dataDir`. */
  databaseUrl: string | undefined;
  /** The embedded database's directory (when there is no DATABASE_URL). */
  dataDir: string;
  /** The declaration file (MEMORY_SYNC_CONFIG or --config); undefined: memory-sync.config.* in the working directory, else the built-in one. */
  configPath: string | undefined;
  host: string;
  port: number;
  logLevel: LogLevel;
  logPretty: boolean;
  /** Apply migrations before serving. */
  migrate: boolean;
  /** Notification log lines per second before they are aggregated. */
  logRate: number;
  /** Backstop: the process exits this long after SIGTERM even if something hangs. */
  shutdownTimeoutMs: number;
  jobs: JobsConfig;
  auth: AuthConfig;
  /** Validated engine options (createMemorySync), without the logger. */
  engine: ResolvedOptions;
}

const url = postgresUrl;
// An IP address or a DNS name: a typo fails here, naming the variable, not at listen().
const host = z
  .string()
  .refine((s) => isIP(s) !== 0 || /^(?=.{1,253}$)([a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*$/.test(s), 'must be an IP address or a host name')
  .refine((s) => !/^\d+(\.\d+){3}$/.test(s) || isIP(s) !== 0, 'is not a valid IPv4 address');
// Strict: "12abc", "1.5", "-1" and "1e3" are errors, not 12, 1, -1 or 1000.
const whole = z
  .string()
  .regex(/^\d+$/, 'must be a whole number')
  .transform(Number)
  .pipe(z.number().int().max(Number.MAX_SAFE_INTEGER));
const int = (min: number, max = Number.MAX_SAFE_INTEGER) => whole.pipe(z.number().min(min).max(max));
const timerMs = (min: number) => int(min, MAX_TIMER_MS);
const bool = z
  .string()
  .transform((s) => s.toLowerCase())
  .pipe(z.enum(['true', 'false', '1', '0'], { error: 'must be true, false, 1 or 0' }))
  .transform((s) => s === 'true' || s === '1');

// Sent in a header, compared as bytes: visible ASCII only, long enough not to be guessed.
const token = z
  .string()
  .min(16, 'must be at least 16 characters: generate one with `openssl rand -hex 32`')
  .max(4096, 'must be at most 4096 characters')
  .regex(/^[\x21-\x7e]+$/, 'must be printable ASCII without spaces (it is sent as `Authorization: Bearer <token>`)');

function authConfig(env: Env): AuthConfig {
  const full = read(env, 'MEMORY_SYNC_TOKEN', token, '') || undefined;
  const readOnly = read(env, 'MEMORY_SYNC_READ_TOKEN', token, '') || undefined;
  if (readOnly !== undefined && full === undefined) {
    throw new ConfigError('MEMORY_SYNC_READ_TOKEN', 'needs MEMORY_SYNC_TOKEN: the read token narrows access that the full token gives');
  }
  if (readOnly !== undefined && readOnly === full) {
    throw new ConfigError('MEMORY_SYNC_READ_TOKEN', 'must differ from MEMORY_SYNC_TOKEN, or a reader could write');
  }
  return {
    token: full,
    readToken: readOnly,
    metricsOpen: read(env, 'MEMORY_SYNC_METRICS_OPEN', bool, false),
    insecure: read(env, 'MEMORY_SYNC_INSECURE', bool, false),
  };
}

/**
 * Engine options set from the environment: variable, option path. Ranges and
 * defaults live in the engine's schema (src/client/options.ts), so a value
 * it rejects is reported under the variable's name.
 */
export const ENGINE_VARIABLES = [
  ['MEMORY_SYNC_POOL_SIZE', 'poolSize'],
  ['MEMORY_SYNC_LISTEN_URL', 'listener.databaseUrl'],
  ['MEMORY_SYNC_LISTENER_PROBE_INTERVAL_MS', 'listener.paranoidIntervalMs'],
  ['MEMORY_SYNC_LISTENER_TIMEOUT_MS', 'listener.queryTimeoutMs'],
  ['MEMORY_SYNC_LISTENER_RETRY_MIN_MS', 'listener.retryMinMs'],
  ['MEMORY_SYNC_LISTENER_RETRY_MAX_MS', 'listener.retryMaxMs'],
  // 0.1's names first, so the new one wins when both are set.
  ['MEMORY_SYNC_PERSONALITY_CACHE_MAX', 'entities.max'],
  ['MEMORY_SYNC_ENTITY_CACHE_MAX', 'entities.max'],
  ['MEMORY_SYNC_PERSONALITY_TTL_MS', 'entities.ttlMs'],
  ['MEMORY_SYNC_ENTITY_TTL_MS', 'entities.ttlMs'],
  ['MEMORY_SYNC_NEGATIVE_TTL_MS', 'entities.negativeTtlMs'],
  ['MEMORY_SYNC_ENTITY_MAX_EVICTIONS', 'entities.maxEvictions'],
  ['MEMORY_SYNC_HOT_SET_MAX_BYTES', 'hotSets.maxBytes'],
  ['MEMORY_SYNC_HOT_SET_MAX_VECTORS', 'hotSets.maxVectorsPerSet'],
  ['MEMORY_SYNC_HOT_SET_RECHECK_MS', 'hotSets.tooLargeTtlMs'],
  ['MEMORY_SYNC_IVFFLAT_PROBES', 'ivfflatProbes'],
  ['MEMORY_SYNC_QUERY_TIMEOUT_MS', 'queryTimeoutMs'],
  ['MEMORY_SYNC_DB_RETRIES', 'retry.retries'],
  ['MEMORY_SYNC_DB_RETRY_MIN_MS', 'retry.minTimeoutMs'],
  ['MEMORY_SYNC_DB_RETRY_MAX_MS', 'retry.maxTimeoutMs'],
  ['MEMORY_SYNC_SUMMARY_INTERVAL_MS', 'summaryIntervalMs'],
  ['MEMORY_SYNC_DNS_RETRY_MS', 'startup.dnsRetryMs'],
  ['MEMORY_SYNC_SOURCE', 'source'],
  ['MEMORY_SYNC_REPLICATION_SLOT', 'replication.slot'],
  ['MEMORY_SYNC_REPLICATION_PUBLICATION', 'replication.publication'],
  ['MEMORY_SYNC_MAX_RETAINED_WAL_BYTES', 'replication.maxRetainedWalBytes'],
  ['MEMORY_SYNC_REPLICATION_STATUS_INTERVAL_MS', 'replication.statusIntervalMs'],
] as const;

/** Engine options read as text; the others are numbers. */
const TEXT_PATHS = new Set<string>(['source', 'replication.slot', 'replication.publication']);

function read<T>(env: Env, name: string, schema: z.ZodType<T>, fallback: T): T {
  const raw = env[name];
  // Empty means unset, as `VAR=` in a compose file or Procfile environment.
  if (raw === undefined || raw === '') return fallback;
  const result = schema.safeParse(raw);
  if (!result.success) throw new ConfigError(name, result.error.issues[0]?.message ?? 'invalid');
  return result.data;
}

function engineOptions(env: Env, databaseUrl: string | undefined, dataDir: string): ResolvedOptions {
  const options: Record<string, unknown> = { databaseUrl, embedded: { dataDir } };
  for (const [name, path] of ENGINE_VARIABLES) {
    const raw = env[name];
    if (raw === undefined || raw === '') continue;
    const value =
      path === 'listener.databaseUrl'
        ? read(env, name, url, '')
        : TEXT_PATHS.has(path)
          ? raw
          : read(env, name, name.endsWith('_MS') ? timerMs(0) : whole, 0);
    const [head, leaf] = path.split('.') as [string, string | undefined];
    if (leaf === undefined) options[head] = value;
    else options[head] = { ...(options[head] as object | undefined), [leaf]: value };
  }
  try {
    return resolveOptions(options as MemorySyncOptions, env);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    const path = err.variable.replace(/^options\./, '');
    // The variable that set the value (the last one set, as above), not merely one that could have.
    const name = ENGINE_VARIABLES.filter(([n, p]) => p === path && env[n]).at(-1)?.[0] ?? ENGINE_VARIABLES.find(([, p]) => p === path)?.[0] ?? 'DATABASE_URL';
    throw new ConfigError(name, err.message.slice(err.variable.length + 2));
  }
}

/** Reads the sidecar's configuration; throws ConfigError naming the first bad variable. */
export function loadConfig(env: Env = process.env): SidecarConfig {
  const databaseUrl = read(env, 'DATABASE_URL', url, '') || undefined;
  const dataDir = read(env, 'MEMORY_SYNC_DATA_DIR', z.string(), './.memory-sync');
  const busUrl = env.MEMORY_SYNC_BUS_URL || undefined;
  if (busUrl) {
    parseBusUrl(busUrl); // a bad URL is a ConfigError naming MEMORY_SYNC_BUS_URL, before anything connects
    if (!databaseUrl) throw new ConfigError('MEMORY_SYNC_BUS_URL', 'needs DATABASE_URL: fleet mode runs against a PostgreSQL server, not the embedded database');
  }
  if (env.MEMORY_SYNC_SOURCE === 'replication' && !databaseUrl) {
    throw new ConfigError('MEMORY_SYNC_SOURCE', 'replication needs DATABASE_URL: the embedded database keeps its in-process source');
  }
  return {
    databaseUrl,
    dataDir,
    configPath: env.MEMORY_SYNC_CONFIG || undefined,
    host: read(env, 'MEMORY_SYNC_HOST', host, '127.0.0.1'),
    port: read(env, 'MEMORY_SYNC_PORT', int(0, 65_535), 7420),
    logLevel: read(env, 'LOG_LEVEL', z.enum(LOG_LEVELS, { error: `must be one of ${LOG_LEVELS.join(', ')}` }), 'info'),
    logPretty: read(env, 'LOG_PRETTY', bool, env.NODE_ENV === 'development'),
    migrate: read(env, 'MEMORY_SYNC_MIGRATE', bool, false),
    logRate: read(env, 'MEMORY_SYNC_LOG_RATE', int(1), 50),
    shutdownTimeoutMs: read(env, 'MEMORY_SYNC_SHUTDOWN_TIMEOUT_MS', timerMs(1), 10_000),
    jobs: {
      historyTtlDays: read<number | undefined>(env, 'MEMORY_SYNC_HISTORY_TTL_DAYS', int(0, 36_500), undefined),
      memoryCap: read<number | undefined>(env, 'MEMORY_SYNC_MEMORY_CAP', int(0), undefined),
      batchSize: read(env, 'MEMORY_SYNC_RETENTION_BATCH', int(1, 100_000), 1000),
      intervalMs: read(env, 'MEMORY_SYNC_JOB_INTERVAL_MS', timerMs(0), 3_600_000),
      indexGuardIntervalMs: read(env, 'MEMORY_SYNC_INDEX_GUARD_INTERVAL_MS', timerMs(0), 300_000),
    },
    auth: authConfig(env),
    engine: engineOptions(env, databaseUrl, dataDir),
  };
}
