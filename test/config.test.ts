import { describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config.js';
import { ConfigError } from '../src/contract/errors.js';

const URL = 'postgresql://u@db.internal:5432/app';

function configError(env: Record<string, string>): ConfigError {
  try {
    loadConfig({ DATABASE_URL: URL, ...env });
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return err as ConfigError;
  }
  throw new Error(`accepted ${JSON.stringify(env)}`);
}

describe('loadConfig', () => {
  it('has the documented defaults', () => {
    expect(loadConfig({ DATABASE_URL: URL })).toEqual({
      databaseUrl: URL,
      dataDir: './.memory-sync',
      configPath: undefined,
      host: '127.0.0.1',
      port: 7420,
      logLevel: 'info',
      logPretty: false,
      migrate: false,
      logRate: 50,
      shutdownTimeoutMs: 10_000,
      // No override: the declaration's jobs apply (the built-in one keeps 30 days of history and 1000 memories).
      jobs: { historyTtlDays: undefined, memoryCap: undefined, batchSize: 1000, intervalMs: 3_600_000, indexGuardIntervalMs: 300_000 },
      auth: { token: undefined, readToken: undefined, metricsOpen: false, insecure: false },
      engine: {
        databaseUrl: URL,
        poolSize: 10,
        listener: { paranoidIntervalMs: 5000, queryTimeoutMs: 3000, retryMinMs: 100, retryMaxMs: 5000 },
        entities: { max: 1000, ttlMs: 300_000, negativeTtlMs: 5000, maxEvictions: 10_000 },
        hotSets: { maxBytes: 268_435_456, maxVectorsPerSet: 20_000, tooLargeTtlMs: 60_000 },
        ivfflatProbes: 1,
        queryTimeoutMs: 30_000,
        retry: { retries: 5, minTimeoutMs: 50, maxTimeoutMs: 2000 },
        summaryIntervalMs: 60_000,
        startup: { dnsRetryMs: 60_000 },
        embedded: { dataDir: './.memory-sync', inMemory: false },
        bus: { url: undefined },
        source: undefined, // the declaration's, else listen
        replication: { slot: 'memory_sync', publication: 'memory_sync', maxRetainedWalBytes: 1_073_741_824, statusIntervalMs: 1000 },
      },
    });
  });

  it('maps every variable onto its setting', () => {
    const c = loadConfig({
      DATABASE_URL: URL,
      MEMORY_SYNC_HOST: '0.0.0.0',
      MEMORY_SYNC_PORT: '8080',
      LOG_LEVEL: 'debug',
      LOG_PRETTY: 'true',
      MEMORY_SYNC_MIGRATE: '1',
      MEMORY_SYNC_LOG_RATE: '5',
      MEMORY_SYNC_SHUTDOWN_TIMEOUT_MS: '3000',
      MEMORY_SYNC_HISTORY_TTL_DAYS: '7',
      MEMORY_SYNC_MEMORY_CAP: '0',
      MEMORY_SYNC_RETENTION_BATCH: '50',
      MEMORY_SYNC_JOB_INTERVAL_MS: '60000',
      MEMORY_SYNC_INDEX_GUARD_INTERVAL_MS: '0',
      MEMORY_SYNC_POOL_SIZE: '20',
      MEMORY_SYNC_LISTEN_URL: 'postgres://u@db-direct:5432/app',
      MEMORY_SYNC_LISTENER_PROBE_INTERVAL_MS: '1000',
      MEMORY_SYNC_LISTENER_TIMEOUT_MS: '900',
      MEMORY_SYNC_LISTENER_RETRY_MIN_MS: '10',
      MEMORY_SYNC_LISTENER_RETRY_MAX_MS: '20',
      MEMORY_SYNC_CONFIG: './bot/memory-sync.config.ts',
      MEMORY_SYNC_ENTITY_CACHE_MAX: '5',
      MEMORY_SYNC_ENTITY_TTL_MS: '6',
      MEMORY_SYNC_NEGATIVE_TTL_MS: '7',
      MEMORY_SYNC_ENTITY_MAX_EVICTIONS: '13',
      MEMORY_SYNC_HOT_SET_MAX_BYTES: '1048576',
      MEMORY_SYNC_HOT_SET_MAX_VECTORS: '100',
      MEMORY_SYNC_HOT_SET_RECHECK_MS: '8',
      MEMORY_SYNC_IVFFLAT_PROBES: '3',
      MEMORY_SYNC_QUERY_TIMEOUT_MS: '9',
      MEMORY_SYNC_DB_RETRIES: '0',
      MEMORY_SYNC_DB_RETRY_MIN_MS: '11',
      MEMORY_SYNC_DB_RETRY_MAX_MS: '12',
      MEMORY_SYNC_SUMMARY_INTERVAL_MS: '0',
      MEMORY_SYNC_DNS_RETRY_MS: '13',
    });
    expect(c).toMatchObject({
      configPath: './bot/memory-sync.config.ts',
      host: '0.0.0.0',
      port: 8080,
      logLevel: 'debug',
      logPretty: true,
      migrate: true,
      logRate: 5,
      shutdownTimeoutMs: 3000,
      jobs: { historyTtlDays: 7, memoryCap: 0, batchSize: 50, intervalMs: 60_000, indexGuardIntervalMs: 0 },
      engine: {
        poolSize: 20,
        listener: { databaseUrl: 'postgres://u@db-direct:5432/app', paranoidIntervalMs: 1000, queryTimeoutMs: 900, retryMinMs: 10, retryMaxMs: 20 },
        entities: { max: 5, ttlMs: 6, negativeTtlMs: 7, maxEvictions: 13 },
        hotSets: { maxBytes: 1_048_576, maxVectorsPerSet: 100, tooLargeTtlMs: 8 },
        ivfflatProbes: 3,
        queryTimeoutMs: 9,
        retry: { retries: 0, minTimeoutMs: 11, maxTimeoutMs: 12 },
        summaryIntervalMs: 0,
        startup: { dnsRetryMs: 13 },
      },
    });
    expect(c.engine).not.toHaveProperty('personalities');
  });

  it('still accepts the 0.1 names of the entity cache variables', () => {
    const c = loadConfig({ DATABASE_URL: URL, MEMORY_SYNC_PERSONALITY_CACHE_MAX: '5', MEMORY_SYNC_PERSONALITY_TTL_MS: '6' });
    expect(c.engine.entities).toEqual({ max: 5, ttlMs: 6, negativeTtlMs: 5000, maxEvictions: 10_000 });
    // A value that is not a number is reported under the name that was set.
    expect(configError({ MEMORY_SYNC_PERSONALITY_TTL_MS: 'soon' }).variable).toBe('MEMORY_SYNC_PERSONALITY_TTL_MS');
    // A range the engine enforces, too; and with both names set, the new one wins.
    expect(configError({ MEMORY_SYNC_PERSONALITY_CACHE_MAX: '0' }).variable).toBe('MEMORY_SYNC_PERSONALITY_CACHE_MAX');
    const both = loadConfig({ DATABASE_URL: URL, MEMORY_SYNC_PERSONALITY_CACHE_MAX: '5', MEMORY_SYNC_ENTITY_CACHE_MAX: '7' });
    expect(both.engine.entities.max).toBe(7);
  });

  it('job overrides: unset keeps the declared job, 0 turns it off, a number replaces it', () => {
    expect(loadConfig({ DATABASE_URL: URL, MEMORY_SYNC_HISTORY_TTL_DAYS: '', MEMORY_SYNC_MEMORY_CAP: '' }).jobs).toMatchObject({
      historyTtlDays: undefined,
      memoryCap: undefined,
    });
    expect(loadConfig({ DATABASE_URL: URL, MEMORY_SYNC_HISTORY_TTL_DAYS: '0', MEMORY_SYNC_MEMORY_CAP: '0' }).jobs).toMatchObject({
      historyTtlDays: 0,
      memoryCap: 0,
    });
    expect(loadConfig({ DATABASE_URL: URL, MEMORY_SYNC_HISTORY_TTL_DAYS: '90', MEMORY_SYNC_MEMORY_CAP: '250' }).jobs).toMatchObject({
      historyTtlDays: 90,
      memoryCap: 250,
    });
  });

  it('NODE_ENV=development turns pretty logs on unless LOG_PRETTY says otherwise; empty means unset', () => {
    expect(loadConfig({ DATABASE_URL: URL, NODE_ENV: 'development' }).logPretty).toBe(true);
    expect(loadConfig({ DATABASE_URL: URL, NODE_ENV: 'development', LOG_PRETTY: 'false' }).logPretty).toBe(false);
    expect(loadConfig({ DATABASE_URL: URL, MEMORY_SYNC_PORT: '' }).port).toBe(7420);
    expect(loadConfig({ DATABASE_URL: URL, MEMORY_SYNC_MIGRATE: 'TRUE' }).migrate).toBe(true);
    expect(loadConfig({ DATABASE_URL: URL, MEMORY_SYNC_CONFIG: '' }).configPath).toBeUndefined();
  });

  it('rejects bad values strictly, naming the variable', () => {
    const cases: Array<[Record<string, string>, string, RegExp]> = [
      [{ MEMORY_SYNC_PORT: 'abc' }, 'MEMORY_SYNC_PORT', /whole number/],
      [{ MEMORY_SYNC_PORT: '80x' }, 'MEMORY_SYNC_PORT', /whole number/],
      [{ MEMORY_SYNC_PORT: '1.5' }, 'MEMORY_SYNC_PORT', /whole number/],
      [{ MEMORY_SYNC_PORT: '-1' }, 'MEMORY_SYNC_PORT', /whole number/],
      [{ MEMORY_SYNC_PORT: '65536' }, 'MEMORY_SYNC_PORT', /65535/],
      [{ MEMORY_SYNC_MIGRATE: 'yes please' }, 'MEMORY_SYNC_MIGRATE', /true, false, 1 or 0/],
      [{ LOG_PRETTY: 'on' }, 'LOG_PRETTY', /true, false, 1 or 0/],
      [{ LOG_LEVEL: 'verbose' }, 'LOG_LEVEL', /one of fatal, error, warn, info, debug, trace, silent/],
      [{ MEMORY_SYNC_LOG_RATE: '0' }, 'MEMORY_SYNC_LOG_RATE', />=1/],
      [{ MEMORY_SYNC_RETENTION_BATCH: '1e3' }, 'MEMORY_SYNC_RETENTION_BATCH', /whole number/],
      [{ MEMORY_SYNC_HISTORY_TTL_DAYS: '36501' }, 'MEMORY_SYNC_HISTORY_TTL_DAYS', /36500/],
      [{ MEMORY_SYNC_HISTORY_TTL_DAYS: '-1' }, 'MEMORY_SYNC_HISTORY_TTL_DAYS', /whole number/],
      [{ MEMORY_SYNC_MEMORY_CAP: 'all' }, 'MEMORY_SYNC_MEMORY_CAP', /whole number/],
      // Past 2^31 - 1 ms Node would fire the timer after 1 ms.
      [{ MEMORY_SYNC_JOB_INTERVAL_MS: '3000000000' }, 'MEMORY_SYNC_JOB_INTERVAL_MS', /2147483647/],
      [{ MEMORY_SYNC_SUMMARY_INTERVAL_MS: '3000000000' }, 'MEMORY_SYNC_SUMMARY_INTERVAL_MS', /2147483647/],
      // Ranges the engine enforces are reported under the variable's name too.
      [{ MEMORY_SYNC_POOL_SIZE: '21' }, 'MEMORY_SYNC_POOL_SIZE', /<=20/],
      [{ MEMORY_SYNC_POOL_SIZE: '0' }, 'MEMORY_SYNC_POOL_SIZE', />0/],
      [{ MEMORY_SYNC_IVFFLAT_PROBES: '51' }, 'MEMORY_SYNC_IVFFLAT_PROBES', /<=50/],
      [{ MEMORY_SYNC_ENTITY_CACHE_MAX: '0' }, 'MEMORY_SYNC_ENTITY_CACHE_MAX', />0/],
      [{ MEMORY_SYNC_ENTITY_MAX_EVICTIONS: '0' }, 'MEMORY_SYNC_ENTITY_MAX_EVICTIONS', />0/],
      [{ MEMORY_SYNC_ENTITY_TTL_MS: '3000000000' }, 'MEMORY_SYNC_ENTITY_TTL_MS', /2147483647/],
      [{ MEMORY_SYNC_LISTENER_RETRY_MAX_MS: 'soon' }, 'MEMORY_SYNC_LISTENER_RETRY_MAX_MS', /whole number/],
      [{ MEMORY_SYNC_LISTEN_URL: 'mysql://x' }, 'MEMORY_SYNC_LISTEN_URL', /postgres/],
      [{ DATABASE_URL: 'http://x' }, 'DATABASE_URL', /postgres/],
    ];
    for (const [env, variable, message] of cases) {
      const err = configError(env);
      expect({ env, variable: err.variable }).toEqual({ env, variable });
      expect(err.message).toMatch(message);
      expect(err.message.startsWith(`${variable}: `)).toBe(true);
    }
    // No DATABASE_URL: the embedded database, in ./.memory-sync unless MEMORY_SYNC_DATA_DIR says otherwise.
    expect(loadConfig({})).toMatchObject({ databaseUrl: undefined, dataDir: './.memory-sync', engine: { embedded: { dataDir: './.memory-sync' } } });
    expect(loadConfig({ MEMORY_SYNC_DATA_DIR: '/tmp/x' }).engine.embedded.dataDir).toBe('/tmp/x');
  });
});
