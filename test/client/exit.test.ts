import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ROOT, connect, createMigratedDatabase, insertPersonality, type TestDb } from '../helpers/db.js';

/** How long a process may take to exit by itself once close() has resolved. */
const EXIT_WITHIN_MS = 2000;

/*
 * The child: the in-process client from the package entry point, used the way
 * a script or a bot shutdown uses it, with nothing that forces an exit.
 * Each step prints a JSON line; the hot-set load is awaited through the
 * client's 'loaded' event.
 */
const CHILD = `
import { once } from 'node:events';
const { createMemorySync, EMBEDDING_DIMENSION } = await import(${JSON.stringify(`${ROOT}src/index.ts`)});
const say = (step, extra = {}) => process.stdout.write(JSON.stringify({ step, at: Date.now(), ...extra }) + '\\n');
const personalityId = process.env.PERSONALITY_ID;
const vector = (seed) => Array.from({ length: EMBEDDING_DIMENSION }, (_, i) => Math.sin(seed * 7919 + i));
const client = createMemorySync({ databaseUrl: process.env.DATABASE_URL, summaryIntervalMs: 0 });
await client.start();
const loaded = once(client, 'loaded');
for (let i = 0; i < 5; i++) await client.storeMemory({ personalityId, channelId: 'general', content: 'memory ' + i, embedding: vector(i) });
await client.sync();
const query = { personalityId, embedding: vector(2), limit: 3 };
await client.findSimilarMemories(query); // cold: pgvector answers and a load starts
await client.findSimilarMemories(query);
const [, , vectors] = await loaded; // (collection, partition, vectors, ms)
const hits = await client.findSimilarMemories(query);
say('searched', { vectors, hotSearches: client.stats().hotSearches, top: hits[0]?.content });
await client.close();
say('closed');
`;

let db: TestDb;
let writer: pg.Client;
beforeAll(async () => {
  db = await createMigratedDatabase();
  writer = await connect(db.url);
});
afterAll(async () => {
  await writer?.end();
  await db?.drop();
});

describe('process exit', () => {
  it(`a script that starts, loads a hot set, searches and closes exits by itself within ${EXIT_WITHIN_MS} ms of close()`, async () => {
    const personalityId = await insertPersonality(writer, 'exit');
    const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', CHILD], {
      cwd: ROOT,
      env: { PATH: process.env.PATH, DATABASE_URL: db.url, PERSONALITY_ID: personalityId },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const exited = once(child, 'exit') as Promise<[number | null, NodeJS.Signals | null]>;
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const steps: Array<{ step: string; at: number; [k: string]: unknown }> = [];
    let closedAt = 0;
    const closed = new Promise<void>((resolve) => {
      createInterface({ input: child.stdout }).on('line', (line) => {
        const s = JSON.parse(line) as (typeof steps)[number];
        steps.push(s);
        if (s.step === 'closed') {
          closedAt = Date.now();
          resolve();
        }
      });
    });

    try {
      await Promise.race([closed, exited.then(([code]) => Promise.reject(new Error(`child exited (${code}) before close():\n${stderr}`)))]);
      // Bounded wait: a hanging child is killed so the failure is reported, not the test timeout.
      const hung = new Promise<'hung'>((resolve) => setTimeout(() => resolve('hung'), EXIT_WITHIN_MS + 1000).unref());
      const result = await Promise.race([exited, hung]);
      const exitMs = Date.now() - closedAt;

      const searched = steps.find((s) => s.step === 'searched')!;
      expect(searched.vectors).toBe(5);
      expect(searched.hotSearches).toBeGreaterThan(0); // the hot set really served
      expect(searched.top).toBe('memory 2');
      expect(result, `still running ${exitMs} ms after close()`).not.toBe('hung');
      expect(result).toEqual([0, null]);
      expect(exitMs).toBeLessThan(EXIT_WITHIN_MS);
      expect(stderr).toBe('');
    } finally {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGKILL');
        await exited;
      }
    }
  });
});
