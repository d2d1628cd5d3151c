import { once } from 'node:events';
import type pg from 'pg';
import pino from 'pino';
import { afterAll, afterEach, beforeAll } from 'vitest';
import { connect, createMigratedDatabase, type TestDb } from './db.js';
import { MemorySync } from '../../src/client/memory-sync.js';
import type { CoreHooks } from '../../src/cache/core.js';
import type { MemorySyncOptions } from '../../src/client/options.js';
import type { InvalidationInfo } from '../../src/client/memory-sync.js';

/** Client options plus the core's test seams (not part of the public options). */
export type TestClientOptions = MemorySyncOptions & { hooks?: CoreHooks };

export async function startClient(url: string, options: TestClientOptions = {}): Promise<MemorySync> {
  const { hooks, ...rest } = options;
  const client = new MemorySync(
    {
      databaseUrl: url,
      logger: pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' }),
      summaryIntervalMs: 0,
      ...rest,
    },
    hooks,
  );
  await client.start();
  return client;
}

/** Resolves with the next invalidation matching `pred`. Register before the write. */
export function nextInvalidation(client: MemorySync, pred: (i: InvalidationInfo) => boolean = () => true): Promise<InvalidationInfo> {
  return new Promise((resolve) => {
    const on = (info: InvalidationInfo) => {
      if (!pred(info)) return;
      client.off('invalidation', on);
      resolve(info);
    };
    client.on('invalidation', on);
  });
}

export { once };

/** A promise with its resolve exposed: a gate a hook can wait on. */
export function gate(): { promise: Promise<void>; open: () => void } {
  let open!: () => void;
  const promise = new Promise<void>((r) => (open = r));
  return { promise, open };
}

/**
 * One migrated database per test file, a writer connection beside it, and
 * clients that are closed after each test.
 */
export function useDatabase() {
  let db: TestDb | undefined;
  let writer: pg.Client | undefined;
  const clients: MemorySync[] = [];
  beforeAll(async () => {
    db = await createMigratedDatabase();
    writer = await connect(db.url);
  });
  afterEach(async () => {
    await Promise.all(clients.splice(0).map((c) => c.close()));
  });
  afterAll(async () => {
    await writer?.end();
    await db?.drop();
  });
  return {
    get db(): TestDb {
      return db!;
    },
    get writer(): pg.Client {
      return writer!;
    },
    /** A started client on this database, closed after the test. */
    async client(options: TestClientOptions = {}): Promise<MemorySync> {
      return this.track(await startClient(db!.url, options));
    },
    /** Closes `client` after the test. */
    track(client: MemorySync): MemorySync {
      clients.push(client);
      return client;
    },
  };
}
