import { describe, expect, it } from 'vitest';
import { MemorySync } from '../../../src/client/memory-sync.js';
import { DEFAULTS, resolveOptions } from '../../../src/client/options.js';
import { loadConfig } from '../../../src/config.js';
import { ConfigError } from '../../../src/contract/errors.js';

/* The replication settings through the options and the environment (pure: nothing connects). */

const URL = 'postgresql://u@127.0.0.1:5441/db';

describe('replication configuration', () => {
  it('leaves the source to the declaration unless chosen; MEMORY_SYNC_SOURCE and its variables reach the engine options', () => {
    expect(resolveOptions({ databaseUrl: URL }, {}).source).toBeUndefined(); // the declaration's, else listen (checked at start)
    expect(resolveOptions({ databaseUrl: URL }, { MEMORY_SYNC_SOURCE: 'listen' }).source).toBe('listen');
    const c = loadConfig({
      DATABASE_URL: URL,
      MEMORY_SYNC_SOURCE: 'replication',
      MEMORY_SYNC_REPLICATION_SLOT: 'bot_1',
      MEMORY_SYNC_REPLICATION_PUBLICATION: 'bot_pub',
      MEMORY_SYNC_MAX_RETAINED_WAL_BYTES: '2097152',
      MEMORY_SYNC_REPLICATION_STATUS_INTERVAL_MS: '250',
    });
    expect(c.engine.source).toBe('replication');
    expect(c.engine.replication).toMatchObject({ slot: 'bot_1', publication: 'bot_pub', maxRetainedWalBytes: 2097152, statusIntervalMs: 250 });
    expect(resolveOptions({ databaseUrl: URL }, {}).replication).toEqual({ ...DEFAULTS.replication });
  });

  it('a bad value is a ConfigError naming the variable', () => {
    const bad = (env: Record<string, string>) => {
      try {
        loadConfig({ DATABASE_URL: URL, ...env });
      } catch (err) {
        expect(err).toBeInstanceOf(ConfigError);
        return (err as ConfigError).variable;
      }
      return 'accepted';
    };
    expect(bad({ MEMORY_SYNC_SOURCE: 'wal2json' })).toBe('MEMORY_SYNC_SOURCE');
    expect(bad({ MEMORY_SYNC_REPLICATION_SLOT: 'Has-Caps' })).toBe('MEMORY_SYNC_REPLICATION_SLOT');
    expect(bad({ MEMORY_SYNC_MAX_RETAINED_WAL_BYTES: '1000' })).toBe('MEMORY_SYNC_MAX_RETAINED_WAL_BYTES');
    expect(bad({ MEMORY_SYNC_MAX_RETAINED_WAL_BYTES: '1GB' })).toBe('MEMORY_SYNC_MAX_RETAINED_WAL_BYTES');
    expect(() => loadConfig({ MEMORY_SYNC_SOURCE: 'replication' })).toThrow(/needs DATABASE_URL/);
  });

  it('the client refuses replication without a server before it connects', () => {
    expect(() => new MemorySync({ source: 'replication' })).toThrow(/needs a PostgreSQL server/);
    // Nor a bus: on the embedded database it would be silently ignored.
    expect(() => new MemorySync({ bus: { url: 'nats://127.0.0.1:4222' } })).toThrow(/options\.bus\.url: needs a PostgreSQL server/);
    const ok = new MemorySync({ databaseUrl: URL, source: 'replication' });
    expect(ok.sourceState).toBe('idle');
    void ok.close();
  });
});
