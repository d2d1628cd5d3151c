import { randomUUID } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { ConfigError, DatabaseUnavailableError, PermanentError, ValidationError } from '../../src/contract/errors.js';
import { barrierMessage, changeMessage } from '../../src/contract/bus-message.js';
import { type Bus, type BusKind } from '../../src/sources/bus/bus.js';
import { BusSource } from '../../src/sources/bus-source.js';
import type { UpInfo } from '../../src/sources/source.js';
import { FreezableProxy } from '../helpers/proxy.js';
import { Admin, change, FAST_BACKOFF, KINDS, makeBus, NATS_PORT, next, REDIS_PORT, silent, uniqueStream } from './bus/helpers.js';
import { OwnServer } from './bus/servers.js';

type Rec = ['change', string] | ['up', UpInfo] | ['down', string] | ['lost', string] | ['invalid', string, boolean] | ['barrier', string];

/** Everything a source emits, in order. */
function record(source: BusSource): Rec[] {
  const log: Rec[] = [];
  const push = (r: Rec) => {
    log.push(r);
    for (const w of [...waiters.get(log) ?? []]) w();
  };
  source.on('change', (e) => push(['change', e.txid]));
  source.on('up', (info) => push(['up', info]));
  source.on('down', (reason) => push(['down', reason]));
  source.on('lost', (reason) => push(['lost', reason]));
  source.on('invalid', (reason, _s, _b, structured) => push(['invalid', reason, structured]));
  source.on('barrier', (token) => push(['barrier', token]));
  return log;
}

const waiters = new WeakMap<Rec[], Set<() => void>>();

/** Resolves once the log holds a record that passes `test`, already there or still to come. */
function until(log: Rec[], test: (r: Rec) => boolean): Promise<Rec> {
  const found = log.find(test);
  if (found) return Promise.resolve(found);
  return new Promise((resolve) => {
    const set = waiters.get(log) ?? new Set();
    waiters.set(log, set);
    const check = () => {
      const r = log.find(test);
      if (!r) return;
      set.delete(check);
      resolve(r);
    };
    set.add(check);
  });
}

const seen = (log: Rec[], txid: string) => until(log, (r) => r[0] === 'change' && r[1] === txid);

const changes = (log: Rec[]) => log.filter((r) => r[0] === 'change').map((r) => r[1]);

describe.each(KINDS)('BusSource on %s', (kind: BusKind) => {
  const cleanups: Array<() => Promise<unknown>> = [];
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c().catch(() => {});
  });

  /** A writer (standing in for a relay) and a subscribing source, optionally through a proxy. */
  async function setup(
    options: { proxy?: FreezableProxy; port?: number; notify?: (token: string) => Promise<unknown>; bus?: Parameters<typeof makeBus>[2] } = {},
  ) {
    const stream = uniqueStream();
    const port = options.port ?? (kind === 'nats' ? NATS_PORT : REDIS_PORT);
    const admin = Admin.for(kind, stream, port);
    cleanups.push(() => admin.deleteStream());
    const writer = makeBus(kind, stream, { port });
    cleanups.push(() => writer.close());
    await writer.connect();
    await writer.ensureStream();
    const bus = makeBus(kind, stream, { ...options.bus, port: options.proxy?.port ?? port });
    const source = new BusSource({ bus, logger: silent, backoff: FAST_BACKOFF, notify: options.notify });
    cleanups.push(() => source.close());
    const log = record(source);
    return { stream, admin, writer, source, log };
  }

  const publishChanges = async (writer: Bus, n: number) => {
    const txids: string[] = [];
    for (let i = 0; i < n; i++) {
      const e = change();
      txids.push(e.txid);
      await writer.publish(changeMessage(e));
    }
    return txids;
  };


  it('comes up at the end of the stream and emits what follows, in order', async () => {
    const { writer, source, log } = await setup();
    await publishChanges(writer, 3); // before start: not replayed, nothing is cached yet
    await source.start();
    expect(source.isUp).toBe(true);
    expect(source.resumable).toBe(true);
    expect(log).toEqual([['up', { first: true, lost: null }]]);
    const txids = await publishChanges(writer, 10);
    await seen(log, txids.at(-1)!);
    expect(changes(log)).toEqual(txids);
    expect(source.stats).toMatchObject({ lastSequence: 13, changes: 10, gapFlushes: 0, resumes: 0 });
    expect(source.stats.lagMs).toEqual(expect.any(Number));
  });

  it('after a real disconnect, emits exactly the missed changes, then up with nothing lost', async () => {
    const proxy = await new FreezableProxy('127.0.0.1', kind === 'nats' ? NATS_PORT : REDIS_PORT).start();
    cleanups.push(() => proxy.close());
    const { writer, source, log } = await setup({ proxy });
    await source.start();
    const before = await publishChanges(writer, 5);
    await seen(log, before.at(-1)!);

    const down = next(source, 'down');
    proxy.refusing = true;
    proxy.resetAll();
    await down;
    expect(source.state).toBe('down');
    const missed = await publishChanges(writer, 20); // writes go on while the subscriber is away
    const up = next<BusSource, [UpInfo]>(source, 'up');
    proxy.refusing = false;
    const [info] = await up;
    expect(info).toEqual({ first: false, lost: null });

    const upAt = log.findIndex((r) => r[0] === 'up' && !r[1].first);
    expect(changes(log.slice(0, upAt))).toEqual([...before, ...missed]); // all missed ones before up, once each
    const after = await publishChanges(writer, 2);
    await seen(log, after.at(-1)!);
    expect(changes(log)).toEqual([...before, ...missed, ...after]);
    expect(source.stats).toMatchObject({ resumes: 1, gapFlushes: 0, lastSequence: 27 });
  });

  it('notices a half-open connection, then resumes with nothing lost', async () => {
    const proxy = await new FreezableProxy('127.0.0.1', kind === 'nats' ? NATS_PORT : REDIS_PORT).start();
    cleanups.push(() => proxy.close());
    const { writer, source, log } = await setup({
      proxy,
      // Short probes so the test waits for a fraction of a second, not the production ~10 s.
      bus: { nats: { pingIntervalMs: 200 }, redis: { blockMs: 200, commandTimeoutMs: 500 } },
    });
    await source.start();
    const before = await publishChanges(writer, 3);
    await seen(log, before.at(-1)!);
    const down = next(source, 'down');
    expect(proxy.freeze()).toBeGreaterThan(0); // sockets stay open, nothing passes
    const missed = await publishChanges(writer, 5);
    await down;
    const [info] = await next<BusSource, [UpInfo]>(source, 'up');
    expect(info).toEqual({ first: false, lost: null });
    expect(changes(log)).toEqual([...before, ...missed]);
  });

  it('reports lost when the stream was trimmed past it while away', async () => {
    const proxy = await new FreezableProxy('127.0.0.1', kind === 'nats' ? NATS_PORT : REDIS_PORT).start();
    cleanups.push(() => proxy.close());
    const { writer, admin, source, log } = await setup({ proxy });
    await source.start();
    const first = await publishChanges(writer, 3);
    await seen(log, first.at(-1)!);
    const down = next(source, 'down');
    proxy.refusing = true;
    proxy.resetAll();
    await down;
    await publishChanges(writer, 5);
    await admin.trimAll();
    await publishChanges(writer, 1);
    const up = next<BusSource, [UpInfo]>(source, 'up');
    proxy.refusing = false;
    const [info] = await up;
    expect(info.lost).toMatch(/trimmed past this subscriber \(next needed 4, first kept 9\)/);
    expect(source.stats).toMatchObject({ gapFlushes: 1, resumes: 0 });
    expect(source.stats.lastGapReason).toBe(info.lost);
  });

  it('reports lost when the stream is deleted and recreated under it', async () => {
    const { writer, admin, source, log } = await setup();
    await source.start();
    const first = await publishChanges(writer, 4);
    await seen(log, first.at(-1)!);
    await admin.deleteStream();
    await writer.ensureStream();
    await publishChanges(writer, 6);
    // NATS: the consumer dies with the stream, the resume finds a new epoch (up with lost).
    // Redis: the next entry has a new epoch and restarts at 1 (lost while up).
    const flush = await until(log, (r) => r[0] === 'lost' || (r[0] === 'up' && r[1].lost !== null));
    const reason = flush[0] === 'lost' ? flush[1] : (flush[1] as UpInfo).lost;
    expect(reason).toMatch(kind === 'nats' ? /stream was recreated/ : /stream was recreated|went back/);
    const more = await publishChanges(writer, 1);
    await seen(log, more[0]!);
    expect(changes(log).slice(0, 4)).toEqual(first);
    expect(source.stats.gapFlushes).toBe(1);
    expect(source.isUp).toBe(true);
  });

  it('flushes on a relay gap and on unreadable entries, and keeps going', async () => {
    const { writer, admin, source, log } = await setup();
    await source.start();
    await writer.publish({ v: 1, kind: 'gap', reason: 'LISTEN reconnected', relay: 'r1', n: 0 });
    await admin.writeMalformed('{"v":1,"kind":"change","event":{"v":2}}');
    const [tail] = await publishChanges(writer, 1);
    await seen(log, tail!);
    expect(log.slice(1)).toEqual([
      ['lost', 'relay r1: LISTEN reconnected'],
      ['invalid', expect.stringMatching(/^bus message event/), true],
      ['change', tail],
    ]);
    expect(source.isUp).toBe(true);
    expect(source.stats).toMatchObject({ gapFlushes: 1, invalid: 1 });
  });

  it('sync() resolves when the barrier comes back through the bus', async () => {
    let relay: Bus | undefined;
    const { writer, source, log } = await setup({ notify: (token) => relay!.publish(barrierMessage(token)) });
    relay = writer;
    await source.start();
    const txids = await publishChanges(writer, 3);
    await source.sync(5_000);
    // Everything published before the barrier was emitted before sync resolved.
    expect(changes(log)).toEqual(txids);
    expect(log.at(-1)![0]).toBe('barrier');
  });

  it('sync() rejects, never throws, when it cannot complete', async () => {
    const failing = await setup({ notify: async () => Promise.reject(new Error('pool exhausted')) });
    await expect(failing.source.sync(1_000)).rejects.toThrow(DatabaseUnavailableError); // not started
    await failing.source.start();
    await expect(failing.source.sync(1_000)).rejects.toThrow(/sync barrier not sent: pool exhausted/);
    await expect(failing.source.sync(0)).rejects.toThrow(ValidationError);

    const silentNotify = await setup({ notify: async () => {} }); // nothing ever reaches the bus
    await silentNotify.source.start();
    await expect(silentNotify.source.sync(50)).rejects.toThrow(/not seen within 50 ms/);
    const pending = expect(silentNotify.source.sync(10_000)).rejects.toThrow(/closed/);
    await silentNotify.source.close();
    await pending;

    const none = await setup();
    await none.source.start();
    await expect(none.source.sync()).rejects.toThrow(ConfigError);
  });

  it('survives a restart of the bus server that keeps its data, and flushes after one that lost it', async () => {
    const server = await OwnServer.start(kind);
    cleanups.push(() => server.stop());
    const { writer, source, log } = await setup({ port: server.port });
    await source.start();
    const first = await publishChanges(writer, 3);
    await seen(log, first.at(-1)!);

    const down = next(source, 'down');
    if (kind === 'nats') await server.down();
    else await server.down(); // Redis runs with no persistence here: a restart is a bus that lost its state
    await down;
    const up = next<BusSource, [UpInfo]>(source, 'up');
    await server.up();
    const [info] = await up;
    if (kind === 'nats') {
      // JetStream file storage keeps the stream and its sequences: resume, no flush.
      expect(info).toEqual({ first: false, lost: null });
    } else {
      expect(info.lost).toMatch(/missing/);
    }
    await writer.connect();
    const after = await publishChanges(writer, 2);
    await seen(log, after.at(-1)!);
    expect(changes(log)).toEqual([...first, ...after]);

    if (kind === 'nats') {
      // Now one that lost its disk.
      const down2 = next(source, 'down');
      await server.wipe();
      await down2;
      const up2 = next<BusSource, [UpInfo]>(source, 'up');
      await server.up();
      const [info2] = await up2;
      expect(info2.lost).toMatch(/missing|recreated/);
    }
  });

  it('rejects start with a PermanentError on bad credentials', async () => {
    const server = await OwnServer.start(kind, kind === 'nats' ? ['--user', 'ms', '--pass', 'right'] : ['--requirepass', 'right']);
    cleanups.push(() => server.stop());
    const bus =
      kind === 'nats'
        ? makeBus(kind, uniqueStream(), { port: server.port, nats: { user: 'ms', pass: 'wrong' } })
        : makeBus(kind, uniqueStream(), { port: server.port, redis: { password: 'wrong' } });
    const source = new BusSource({ bus, logger: silent, backoff: FAST_BACKOFF });
    cleanups.push(() => source.close());
    const err = await source.start().then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(PermanentError);
    expect((err as Error).message).toMatch(/MEMORY_SYNC_BUS_URL/);
  });

  it('keeps trying while the bus is unreachable at start, with retry events', async () => {
    const server = await OwnServer.start(kind);
    cleanups.push(() => server.stop());
    await server.down();
    const bus = makeBus(kind, uniqueStream(), { port: server.port });
    const source = new BusSource({ bus, logger: silent, backoff: FAST_BACKOFF });
    cleanups.push(() => source.close());
    const retried = next(source, 'retry');
    const started = source.start();
    await retried;
    await server.up();
    await started;
    expect(source.isUp).toBe(true);
    void randomUUID;
  });
});
