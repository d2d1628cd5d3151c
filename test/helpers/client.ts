import { once } from 'node:events';
import pino from 'pino';
import { createMemorySync, type MemorySync } from '../../src/client/memory-sync.js';
import type { MemorySyncOptions } from '../../src/client/options.js';
import type { InvalidationInfo } from '../../src/client/memory-sync.js';

export async function startClient(url: string, options: MemorySyncOptions = {}): Promise<MemorySync> {
  const client = createMemorySync({
    databaseUrl: url,
    logger: pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' }),
    summaryIntervalMs: 0,
    ...options,
  });
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
