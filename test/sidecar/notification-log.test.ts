import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type pg from 'pg';
import pino from 'pino';
import type { InvalidationInfo } from '../../src/client/memory-sync.js';
import { NotificationLog } from '../../src/sidecar/notification-log.js';
import { connect, createMigratedDatabase, type TestDb } from '../helpers/db.js';
import { killLeftovers, spawnSidecar, type LogLine } from './helpers.js';

function memoryLogger() {
  const lines: LogLine[] = [];
  let waiting: { msg: string; resolve: (l: LogLine) => void } | undefined;
  const stream = new Writable({
    write(chunk, _enc, done) {
      const line = JSON.parse(String(chunk)) as LogLine;
      lines.push(line);
      if (waiting?.msg === line.msg) waiting.resolve(line);
      done();
    },
  });
  /** Resolves with the next line with this message. */
  const next = (msg: string) => new Promise<LogLine>((resolve) => (waiting = { msg, resolve }));
  return { lines, next, logger: pino({ level: 'info' }, stream) };
}

function info(model: 'Memory' | 'Personality', n: number, action: InvalidationInfo['action'] = 'patched'): InvalidationInfo {
  const pid = `00000000-0000-4000-8000-${String(n % 1000).padStart(12, '0')}`;
  return {
    event: { ms: 2, model, op: 'DELETE', scope: 'rows', fields: ['id', 'personalityId'], rows: [], gone: [[pid], [pid]], txid: String(n), ts: 0, chunk: 1, chunks: 1 },
    action,
    lagMs: n % 7,
    source: 'listen',
  };
}

/** pino writes through a stream: let it drain. */
const settle = () => new Promise((r) => setImmediate(r));

describe('NotificationLog', () => {
  it('logs one line per notification up to the rate, then one summary per (table, op, action) per window', async () => {
    const { lines, logger } = memoryLogger();
    let now = 0;
    const log = new NotificationLog({ logger, ratePerSecond: 5, now: () => now });
    for (let i = 0; i < 10_000; i++) log.record(info(i % 2 ? 'Memory' : 'Personality', i, i % 3 ? 'patched' : 'ignored'));
    now = 1_000; // next window: the previous one is summarized first
    log.record(info('Memory', 1));
    log.flush();
    await settle();

    const detail = lines.filter((l) => l.msg === 'notification');
    const summaries = lines.filter((l) => l.msg === 'notifications aggregated');
    expect(detail).toHaveLength(6); // 5 in the first window, 1 in the second
    expect(summaries).toHaveLength(4); // 2 models x 2 actions
    expect(detail[0]).toMatchObject({ model: 'Personality', op: 'DELETE', rows: 0, gone: 2, action: 'ignored', lagMs: 0 });
    expect(detail[0]!.fields).toEqual(['id', 'personalityId']);
    const counted = summaries.reduce((n, s) => n + (s.count as number), 0);
    expect(counted + 5).toBe(10_000);
    for (const s of summaries) {
      expect(s).toMatchObject({ op: 'DELETE', gone: (s.count as number) * 2, maxLagMs: 6 });
    }
  });

  it('writes pending summaries when the window ends, without another notification', async () => {
    const { lines, next, logger } = memoryLogger();
    const log = new NotificationLog({ logger, ratePerSecond: 1, windowMs: 20 });
    const summary = next('notifications aggregated');
    for (let i = 0; i < 3; i++) log.record(info('Memory', i));
    expect(await summary).toMatchObject({ model: 'Memory', count: 2, gone: 4 });
    expect(lines.map((l) => l.msg)).toEqual(['notification', 'notifications aggregated']);
  });
});

describe('notification log of a running sidecar under a flood', () => {
  let db: TestDb;
  let writer: pg.Client;
  beforeAll(async () => {
    db = await createMigratedDatabase();
    writer = await connect(db.url);
  });
  afterAll(async () => {
    await killLeftovers();
    await writer?.end();
    await db?.drop();
  });

  it('stays bounded: at most MEMORY_SYNC_LOG_RATE lines per second plus summaries, and every notification is counted', async () => {
    const RATE = 20;
    const FLOOD = 3_000;
    const sc = await spawnSidecar({ DATABASE_URL: db.url, MEMORY_SYNC_LOG_RATE: String(RATE) });
    const from = sc.mark();
    // Valid v2 payloads, distinct (identical ones in one transaction would be merged by PostgreSQL).
    await writer.query(
      `SELECT pg_notify('memory_sync', json_build_object(
         'ms', 2, 'model', 'Memory', 'op', 'DELETE', 'scope', 'rows', 'fields', json_build_array('id', 'personalityId'),
         'rows', json_build_array(), 'gone', json_build_array(json_build_array(gen_random_uuid())),
         'txid', i::text, 'ts', extract(epoch from clock_timestamp()) * 1000, 'chunk', 1, 'chunks', 1)::text)
       FROM generate_series(1, $1) AS i`,
      [FLOOD],
    );
    let total = 0;
    await sc.waitForLog((l) => {
      if (l.msg === 'notification') total += 1;
      if (l.msg === 'notifications aggregated') total += l.count as number;
      return total >= FLOOD;
    }, from);
    expect(await sc.stop()).toBe(0);

    const flood = sc.logs.slice(from).filter((l) => l.msg === 'notification' || l.msg === 'notifications aggregated');
    const detail = flood.filter((l) => l.msg === 'notification');
    const seconds = Math.ceil((flood.at(-1)!.time - flood[0]!.time) / 1000) + 1;
    expect(total).toBe(FLOOD);
    expect(detail.length).toBeGreaterThanOrEqual(RATE);
    expect(detail.length).toBeLessThanOrEqual(RATE * seconds);
    // One summary per window for the single (model, op, action) key.
    expect(flood.length - detail.length).toBeLessThanOrEqual(seconds);
    expect(flood.length).toBeLessThan(FLOOD / 10);
    expect(detail[0]).toMatchObject({ model: 'Memory', op: 'DELETE', rows: 0, gone: 1, action: 'ignored' });
  });
});
