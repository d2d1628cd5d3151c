import { randomUUID } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { ConfigError } from '../../../src/contract/errors.js';
import { barrierMessage, busMessageId, changeMessage, parseBusMessage } from '../../../src/contract/bus-message.js';
import { parseBusUrl, type Bus, type BusKind } from '../../../src/sources/bus/bus.js';
import { continuityProblem } from '../../../src/sources/bus-source.js';
import { FreezableProxy } from '../../helpers/proxy.js';
import { Admin, change, Collector, KINDS, makeBus, NATS_PORT, next, REDIS_PORT, uniqueStream } from './helpers.js';

describe('bus messages', () => {
  it('ids are deterministic and name one event', () => {
    const e = change();
    // Same event parsed from JSON in another relay: same id.
    const copy = JSON.parse(JSON.stringify({ ...e, ts: e.ts }));
    expect(busMessageId(changeMessage(copy))).toBe(busMessageId(changeMessage(e)));
    // Key order does not matter either (another relay may build the object differently).
    const reordered = Object.fromEntries(Object.entries(e).reverse()) as typeof e;
    expect(busMessageId(changeMessage(reordered))).toBe(busMessageId(changeMessage(e)));
    expect(busMessageId(changeMessage(e))).toMatch(new RegExp(`^c\\.${e.txid}\\.Memory\\.INSERT\\.1\\.[A-Za-z0-9_-]{16}$`));
    // Two statements of one transaction: same txid/model/op/chunk, different rows, different ids.
    const second = { ...e, rows: [[randomUUID(), e.rows[0]![1]!]] };
    expect(busMessageId(changeMessage(second))).not.toBe(busMessageId(changeMessage(e)));
    // The same rows gone instead of new: another event, another id.
    const gone = { ...e, op: 'DELETE' as const, rows: [], gone: [[e.rows[0]![0]!]] };
    expect(busMessageId(changeMessage(gone))).toMatch(new RegExp(`^c\\.${e.txid}\\.Memory\\.DELETE\\.1\\.`));
    // Chunks of one statement, and another model's event in the same transaction: distinct ids.
    const chunk2 = { ...e, chunk: 2, chunks: 2 };
    const personality = { ...e, model: 'Personality', fields: ['id'], rows: [[e.rows[0]![1]!]] };
    const ids = [e, second, gone, chunk2, personality].map((x) => busMessageId(changeMessage(x)));
    expect(new Set(ids).size).toBe(ids.length);
    expect(busMessageId(changeMessage(personality))).toMatch(new RegExp(`^c\\.${e.txid}\\.Personality\\.INSERT\\.1\\.`));
    expect(busMessageId(barrierMessage('tok-1'))).toBe('tok-1');
  });

  it('an event from logical replication is named by its commit position and index, whichever relay read it', () => {
    const e = change();
    const id = busMessageId(changeMessage(e, '00000016B374D848.0'));
    expect(id).toMatch(/^r\.00000016B374D848\.0\./);
    expect(id).not.toContain(`.${e.txid}.`);
    expect(busMessageId(changeMessage(e, '00000016B374D848.0'))).toBe(id);
    expect(busMessageId(changeMessage(e, '00000016B374D850.0'))).not.toBe(id);
    expect(busMessageId(changeMessage(e, '00000016B374D848.1'))).not.toBe(id);
    expect(parseBusMessage(JSON.stringify(changeMessage(e, '16/B374D848'))).ok).toBe(false); // not the wire form of a position
  });

  it('parseBusMessage never throws and names what is wrong', () => {
    const e = change();
    expect(parseBusMessage(JSON.stringify(changeMessage(e)))).toEqual({ ok: true, message: { v: 1, kind: 'change', event: e } });
    expect(parseBusMessage('{')).toMatchObject({ ok: false, reason: /not JSON/ });
    const bad: Array<[unknown, RegExp]> = [
      [{ v: 1, kind: 'change', event: { ...e, rows: [['x']] } }, /^bus message event: every row has one value per field/],
      [{ v: 1, kind: 'change', event: { ...e, model: undefined } }, /^bus message event\.model:/],
      [{ v: 1, kind: 'change', event: { ...e, ms: 3 } }, /^bus message event\.ms:/],
      [{ v: 1, kind: 'change', event: { ...e, chunk: 2, chunks: 1 } }, /^bus message event: chunk exceeds chunks/],
      [{ v: 1, kind: 'change', event: { ...e, scope: 'model' } }, /^bus message event: a model-scope event names no rows/],
      // A 0.1 relay's v1 event is not a v2 one.
      [{ v: 1, kind: 'change', event: { v: 1, table: 'memories', op: 'INSERT', scope: 'rows', ids: [randomUUID()], personalityIds: [], txid: '1', ts: 1, chunk: 1, chunks: 1 } }, /^bus message event\.ms:/],
      [{ v: 2, kind: 'change' }, /^bus message/],
      [{ v: 1, kind: 'barrier', token: 'a b' }, /token/],
      [[1], /^bus message/],
    ];
    for (const [message, reason] of bad) {
      const raw = JSON.stringify(message);
      let r: ReturnType<typeof parseBusMessage> | undefined;
      expect(() => (r = parseBusMessage(raw))).not.toThrow();
      expect(r, raw).toMatchObject({ ok: false, reason, bytes: Buffer.byteLength(raw) });
    }
  });
});

describe('parseBusUrl', () => {
  it.each([
    ['nats://127.0.0.1:4222', { kind: 'nats', servers: '127.0.0.1:4222', stream: 'memory_sync', tls: false }],
    ['nats://nats.internal/fleet_a', { kind: 'nats', servers: 'nats.internal:4222', stream: 'fleet_a' }],
    ['nats://u:p%40ss@h:1/s', { kind: 'nats', user: 'u', pass: 'p@ss', stream: 's' }],
    ['tls://h', { kind: 'nats', tls: true }],
    ['redis://127.0.0.1:6379', { kind: 'redis', host: '127.0.0.1', port: 6379, db: 0, stream: 'memory_sync' }],
    ['redis://r:7000/3?stream=fleet', { kind: 'redis', host: 'r', port: 7000, db: 3, stream: 'fleet' }],
    ['rediss://:secret@r', { kind: 'redis', password: 'secret', tls: true, port: 6379 }],
  ])('%s', (url, expected) => {
    expect(parseBusUrl(url)).toMatchObject(expected);
  });

  it.each([
    ['not a url', /is not a URL/],
    ['http://h', /scheme "http:" is not supported/],
    ['nats://h:99999', /MEMORY_SYNC_BUS_URL/],
    ['nats://h/a/b', /at most one segment/],
    ['nats://h/bad.name', /stream "bad.name"/],
    ['nats://h?stream=x', /query parameters/],
    ['redis://h/x', /database number/],
    ['redis://h?strem=x', /unknown parameter "strem"/],
    ['redis://h?stream=a*b', /stream "a\*b"/],
  ])('rejects %s', (url, message) => {
    let err: unknown;
    try {
      parseBusUrl(url);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).variable).toBe('MEMORY_SYNC_BUS_URL');
    expect((err as Error).message).toMatch(message);
  });
});

describe.each(KINDS)('bus contract: %s', (kind: BusKind) => {
  const cleanups: Array<() => Promise<unknown>> = [];
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c().catch(() => {});
  });

  async function setup(options: Parameters<typeof makeBus>[2] = {}): Promise<{ bus: Bus; admin: Admin; stream: string }> {
    const stream = uniqueStream();
    const admin = Admin.for(kind, stream);
    cleanups.push(() => admin.deleteStream());
    const bus = makeBus(kind, stream, options);
    cleanups.push(() => bus.close());
    await bus.connect();
    await bus.ensureStream();
    return { bus, admin, stream };
  }

  it('publishes with contiguous sequences and drops a repeated id', async () => {
    const { bus } = await setup();
    const other = makeBus(kind, bus.stream); // a second relay
    cleanups.push(() => other.close());
    await other.connect();
    const a = changeMessage(change());
    const b = barrierMessage(randomUUID());
    expect(await bus.publish(a)).toEqual({ seq: 1, duplicate: false });
    expect(await other.publish(a)).toMatchObject({ duplicate: true });
    expect(await other.publish(b)).toEqual({ seq: 2, duplicate: false });
    expect(await bus.publish(b)).toMatchObject({ duplicate: true });
    const s = await bus.state();
    expect(s).toMatchObject({ firstSeq: 1, lastSeq: 2 });
    expect(s.epoch).toEqual(expect.any(String));
  });

  it('delivers in order from a cursor, then live', async () => {
    const { bus } = await setup();
    const events = Array.from({ length: 30 }, () => change());
    for (const e of events.slice(0, 20)) await bus.publish(changeMessage(e));
    const c = await Collector.on(bus, { seq: 5, position: '' + (await positionOf(bus, 5)) });
    cleanups.push(() => c.close());
    for (const e of events.slice(20)) await bus.publish(changeMessage(e));
    await c.count(25);
    expect(c.entries.map((e) => e.seq)).toEqual(Array.from({ length: 25 }, (_, i) => i + 6));
    expect(c.entries.map((e) => (e.parsed.ok && e.parsed.message.kind === 'change' ? e.parsed.message.event.txid : null))).toEqual(
      events.slice(5).map((e) => e.txid),
    );
  });

  it('resumes after a real disconnect with exactly the missed entries', async () => {
    const { bus: writer, stream } = await setup();
    const proxy = await new FreezableProxy('127.0.0.1', kind === 'nats' ? NATS_PORT : REDIS_PORT).start();
    cleanups.push(() => proxy.close());
    const reader = makeBus(kind, stream, { port: proxy.port });
    cleanups.push(() => reader.close());
    await reader.connect();
    const c = await Collector.on(reader);
    cleanups.push(() => c.close());
    for (let i = 0; i < 10; i++) await writer.publish(changeMessage(change()));
    await c.count(10);
    const cursor = { ...c.last, epoch: (await writer.state()).epoch };

    // The network goes away: the subscription ends (Redis) or the bus reports the disconnect (NATS).
    proxy.refusing = true;
    const gone = Promise.race([c.end(), next(reader, 'disconnect')]);
    proxy.resetAll();
    await gone;
    await c.close();
    for (let i = 0; i < 20; i++) await writer.publish(changeMessage(change()));
    proxy.refusing = false;

    await reader.connect();
    const state = await reader.state();
    expect(continuityProblem(cursor, state)).toBeNull();
    const resumed = await Collector.on(reader, cursor);
    cleanups.push(() => resumed.close());
    await writer.publish(changeMessage(change()));
    await resumed.count(21);
    expect(resumed.entries.map((e) => e.seq)).toEqual(Array.from({ length: 21 }, (_, i) => i + 11));
    expect(c.entries).toHaveLength(10);
  });

  it('shows a gap when the stream is trimmed while the subscriber is away', async () => {
    const { bus, admin } = await setup();
    const c = await Collector.on(bus);
    for (let i = 0; i < 5; i++) await bus.publish(changeMessage(change()));
    await c.count(5);
    await c.close();
    const cursor = { ...c.last, epoch: (await bus.state()).epoch };
    for (let i = 0; i < 5; i++) await bus.publish(changeMessage(change()));
    await admin.trimAll();
    await bus.publish(changeMessage(change()));
    expect(continuityProblem(cursor, await bus.state())).toMatch(/trimmed past this subscriber \(next needed 6, first kept 11\)/);
    // Read anyway: the first entry delivered is not last + 1.
    const after = await Collector.on(bus, cursor);
    cleanups.push(() => after.close());
    await after.count(1);
    expect(after.entries[0]!.seq).toBe(11);
  });

  it('a trim the subscriber had already read past is no gap', async () => {
    const { bus, admin } = await setup();
    for (let i = 0; i < 5; i++) await bus.publish(changeMessage(change()));
    const s = await bus.state();
    await admin.trimAll();
    expect(continuityProblem({ epoch: s.epoch, seq: 5, position: s.lastPosition }, await bus.state())).toBeNull();
  });

  it('shows a gap when the stream is deleted and recreated', async () => {
    const { bus, admin } = await setup();
    for (let i = 0; i < 5; i++) await bus.publish(changeMessage(change()));
    const before = await bus.state();
    await admin.deleteStream();
    await bus.ensureStream();
    for (let i = 0; i < 7; i++) await bus.publish(changeMessage(change()));
    const after = await bus.state();
    expect(after.lastSeq).toBe(7);
    expect(after.epoch).not.toBe(before.epoch);
    expect(continuityProblem({ epoch: before.epoch, seq: 5, position: before.lastPosition }, after)).toMatch(/recreated/);
  });

  it('delivers unreadable entries as values and keeps going', async () => {
    const { bus, admin } = await setup();
    const c = await Collector.on(bus);
    cleanups.push(() => c.close());
    await bus.publish(changeMessage(change()));
    await admin.writeMalformed('not json');
    await admin.writeMalformed(JSON.stringify({ v: 1, kind: 'change', event: { ms: 2, model: 'Memory' } }));
    if (kind === 'redis') await admin.writeForeign();
    await bus.publish(changeMessage(change()));
    const total = kind === 'redis' ? 5 : 4;
    await c.count(total);
    const oks = c.entries.map((e) => e.parsed.ok);
    expect(oks).toEqual(kind === 'redis' ? [true, false, false, false, true] : [true, false, false, true]);
    expect(c.entries.filter((e) => !e.parsed.ok).map((e) => (e.parsed.ok ? '' : e.parsed.reason))).toEqual(
      expect.arrayContaining([expect.stringMatching(/not JSON/), expect.stringMatching(/event/)]),
    );
    // Malformed messages written in sequence keep it contiguous; a foreign Redis entry has no number.
    expect(c.entries.map((e) => e.seq)).toEqual(kind === 'redis' ? [1, 2, 3, null, 4] : [1, 2, 3, 4]);
  });

  it('carries a barrier through', async () => {
    const { bus } = await setup();
    const c = await Collector.on(bus);
    cleanups.push(() => c.close());
    const token = randomUUID();
    await bus.publish(changeMessage(change()));
    await bus.publish(barrierMessage(token));
    await c.count(2);
    expect(c.entries[1]!.parsed).toEqual({ ok: true, message: { v: 1, kind: 'barrier', token } });
  });
});

/** The engine cursor just after sequence `seq` (NATS: the number; Redis: that entry's id). */
async function positionOf(bus: Bus, seq: number): Promise<string> {
  if (bus.kind === 'nats') return String(seq);
  const c = await Collector.on(bus, { seq: 0, position: '0-0' });
  await c.count(seq);
  await c.close();
  return c.entries[seq - 1]!.position;
}
