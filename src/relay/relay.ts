import { randomBytes } from 'node:crypto';
import pg from 'pg';
import type { Logger } from 'pino';
import { z } from 'zod';
import { ConfigError } from '../contract/errors.js';
import { parseOptions } from '../validation/parse.js';
import { timerMs } from '../contract/primitives.js';
import { backoffDelay, DEFAULT_BACKOFF, sleepUnlessAborted, type BackoffOptions } from '../sources/backoff.js';
import { barrierMessage, barrierToken, changeMessage, type BusMessage } from '../contract/bus-message.js';
import { type Bus } from '../sources/bus/bus.js';
import { lsnKey, parseLsn } from '../sources/replication/lsn.js';
import { isConfirming, type HandedTransaction } from '../sources/replication/source.js';
import type { ChangeSource, UpInfo } from '../sources/source.js';

/**
 * How a LISTEN relay proves, at start, that another relay covered the time
 * before it listened (so it need not publish a gap): the database server's
 * clock and a NOTIFY on the barrier channel, on any connection to the same
 * database (src/relay/relay.ts, "start-up gaps").
 */
export interface RelayCoverage {
  /** The server's clock (clock_timestamp()), µs since the epoch, as a decimal string. */
  now(): Promise<string>;
  /** pg_notify on the barrier channel: reaches every listening relay in commit order. */
  notify(token: string): Promise<unknown>;
  close?(): Promise<void>;
}

/** RelayCoverage over a one-connection pool of its own (a direct URL or a session pooler both do); `channel` is the barrier channel. */
export function pgCoverage(databaseUrl: string, channel: string): RelayCoverage & { close(): Promise<void> } {
  const pool = new pg.Pool({ connectionString: databaseUrl, max: 1, application_name: 'memory-sync-relay', connectionTimeoutMillis: 5_000, query_timeout: 5_000 });
  pool.on('error', () => {});
  return {
    now: async () => (await pool.query<{ t: string }>(`SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint::text AS t`)).rows[0]!.t,
    notify: (token) => pool.query('SELECT pg_notify($1, $2)', [channel, token]),
    close: () => pool.end(),
  };
}

/** A start-up probe: `cover.<relay id>.<server µs read before this relay listened>`. */
const COVER = /^cover\.([A-Za-z0-9_-]{1,64})\.(\d{1,20})$/;

export interface RelayOptions {
  /**
   * Where changes come from: PostgreSQL LISTEN (src/sources/pg-listen.ts), or
   * a replication slot (ReplicationSource with `confirm: 'manual'`: the relay
   * confirms each transaction once the bus took it). The relay starts and closes it.
   */
  source: ChangeSource;
  /** Where they go. The relay connects and closes it. */
  publisher: Bus;
  logger: Logger;
  /**
   * Names this relay in gap messages and logs.
   * @defaultValue "relay-" + 8 random hex digits — unique per process, so two relays' gaps stay two messages.
   */
  id?: string;
  /**
   * Delays between publish attempts while the bus is unreachable.
   * @defaultValue DEFAULT_BACKOFF (100 ms doubling to 5 s)
   */
  backoff?: BackoffOptions;
  /**
   * Messages held while the bus is unreachable. Past this a LISTEN relay
   * drops them and publishes one gap instead (subscribers flush), rather
   * than grow without bound; a replication relay stops reading the slot
   * until the queue drains (nothing is lost: the server keeps the WAL).
   * @defaultValue 100000 — minutes of a busy database, tens of MB at most.
   */
  maxQueue?: number;
  /**
   * LISTEN only: publish a gap when the source first comes up, unless
   * `coverage` proves another relay listened all along. Changes committed
   * while no relay listened (a deploy of the only relay) reach no
   * subscriber; the gap makes them flush once. A replication source needs
   * none: the slot kept them.
   * @defaultValue true
   */
  gapOnStart?: boolean;
  /**
   * LISTEN only: lets a starting relay skip its gap when another relay has
   * listened since before it (see "start-up gaps" below).
   * @defaultValue none — every start publishes a gap.
   */
  coverage?: RelayCoverage;
  /**
   * How long a starting relay gives the others to relay its probe before it
   * decides that nobody covered it (and publishes the gap).
   * @defaultValue 1000 — a running relay forwards it within milliseconds; well inside the buses' 120 s duplicate windows.
   */
  coverWaitMs?: number;
}

export interface RelayStats {
  /** Messages the bus took as new. */
  published: number;
  /** Messages the bus already had (another relay's copy, or a retried publish). */
  duplicates: number;
  /** Gap messages this relay sent. */
  gaps: number;
  /** Starts another relay proved covered: no gap was needed. */
  coveredStarts: number;
  /** Transactions confirmed to the replication slot after the bus took them. */
  confirmed: number;
  /** Times reading the slot paused because the queue was full (the bus away). */
  pauses: number;
  /** Failed publish attempts (each retried). */
  publishFailures: number;
  queued: number;
  lastPublishError: string | null;
}

export interface Relay {
  readonly id: string;
  readonly stats: RelayStats;
  /** Resolves once everything received so far is on the bus (for tests and shutdown). */
  drained(): Promise<void>;
  /**
   * Stops listening, publishes what is queued for up to `drainMs`, then
   * closes the source and the bus. `drainMs: 0` drops the queue at once, as a
   * crash would.
   */
  stop(options?: { drainMs?: number }): Promise<void>;
}

const optionsSchema = z.object({
  id: z.string().regex(/^[A-Za-z0-9_-]{1,64}$/, 'must be 1 to 64 letters, digits, _ or -').optional(),
  backoff: z.object({ minMs: timerMs(0), maxMs: timerMs(1) }).default(DEFAULT_BACKOFF),
  maxQueue: z.number().int().min(1).default(100_000),
  gapOnStart: z.boolean().default(true),
  coverWaitMs: timerMs(1).default(1_000),
});

type Item = BusMessage | { ack: string } | { probe: string };
const isMessage = (i: Item): i is BusMessage => 'kind' in i;

/**
 * Publishes every change and barrier the source emits to the bus, in the
 * order received, one at a time (so the stream's order is commit order and
 * a barrier never overtakes a change), each retried until the bus takes it.
 * Message ids are deterministic (busMessageId), so two or more relays on the
 * same database are harmless: the bus keeps the first copy of each.
 *
 * From a replication slot, each transaction is confirmed to the slot only
 * once the bus took all of it, and its messages carry the commit position in
 * their ids: a relay killed mid-transaction, restarted or replaced by its
 * standby, publishes the same messages again and the bus drops the copies.
 * While the bus is away and the queue is full, the relay stops reading the
 * slot (the server keeps the WAL) instead of dropping anything.
 *
 * Start-up gaps (LISTEN): NOTIFY keeps nothing for a relay that was not
 * listening, so a starting relay publishes a gap (subscribers flush) unless
 * it can prove another relay listened all along. Before it listens it reads
 * the server's clock, t0; once up, it sends `cover.<id>.<t0>` with NOTIFY.
 * A running relay forwards such a probe to the bus only if its own LISTEN
 * session has lasted since before t0 (its own clock reading, taken once it
 * was up, is earlier than t0), after every change it received before it. The
 * starting relay publishes the probe itself after `coverWaitMs`: the bus
 * reports a duplicate exactly when another relay forwarded it first, and
 * then no gap is needed — every commit before this relay listened either
 * reached that relay, or came before that relay listened and is that
 * relay's own start (its gap, or its own older cover). The strict "earlier
 * than t0" makes covering a chain back in time, so two relays starting
 * together cannot vouch for each other. Anything else (no other relay, a
 * failed probe, a busy bus) publishes the gap.
 *
 * Resolves once the source is up (its start-up gap is queued; drained()
 * waits for the bus to take it). Rejects when the source cannot start for good (PermanentError).
 */
export async function runRelay(options: RelayOptions): Promise<Relay> {
  const o = parseOptions(
    optionsSchema,
    { id: options.id, backoff: options.backoff, maxQueue: options.maxQueue, gapOnStart: options.gapOnStart, coverWaitMs: options.coverWaitMs },
    'relay',
  );
  const { source, publisher, logger, coverage } = options;
  const slot = isConfirming(source) ? source : undefined;
  if (slot && slot.confirmMode !== 'manual') {
    throw new ConfigError('relay.source', "a replication source for a relay needs confirm: 'manual' (the relay confirms once the bus took a transaction)");
  }
  const id = o.id ?? `relay-${randomBytes(4).toString('hex')}`;
  const log = logger.child({ relay: id, bus: publisher.kind });
  const stop = new AbortController();
  const queue: Item[] = [];
  let gapCount = 0;
  let wake: (() => void) | undefined;
  let idleWaiters: Array<() => void> = [];
  let busy = false;
  let closing = false;
  /** A start-up probe is out: drained() waits for its verdict too. */
  let probing = false;
  const settleIdle = () => {
    if (busy || queue.length > 0 || probing) return;
    for (const w of idleWaiters) w();
    idleWaiters = [];
  };
  const stats: RelayStats = { published: 0, duplicates: 0, gaps: 0, coveredStarts: 0, confirmed: 0, pauses: 0, publishFailures: 0, queued: 0, lastPublishError: null };

  const push = (item: Item) => {
    queue.push(item);
    stats.queued = queue.length;
    wake?.();
  };
  const enqueue = (m: BusMessage) => {
    if (stop.signal.aborted) return;
    if (queue.length >= o.maxQueue) {
      const dropped = queue.length;
      queue.length = 0;
      log.error({ dropped }, 'bus unreachable too long: queue dropped, subscribers will flush');
      queue.push(gap(`relay queue overflowed while the bus was unreachable (${dropped} messages dropped)`));
    }
    push(m);
  };
  const gap = (reason: string): BusMessage => {
    stats.gaps++;
    return { v: 1, kind: 'gap', reason, relay: id, n: gapCount++ };
  };

  // -------------------------------------------------- LISTEN: start-up cover
  const listening = !source.resumable && coverage !== undefined;
  /** Server clock read once this relay's current LISTEN session was up; undefined while down or unknown. */
  let since: bigint | undefined;
  let sessions = 0;
  const serverNow = async (): Promise<bigint | undefined> => {
    try {
      return BigInt(await coverage!.now());
    } catch (err) {
      log.warn({ err }, 'reading the server clock failed');
      return undefined;
    }
  };
  const before = listening && o.gapOnStart ? await serverNow() : undefined;
  const startGap = () => {
    const reason = 'relay started; changes committed before it listened were not relayed by it';
    if (!listening || before === undefined) return enqueue(gap(reason));
    const token = `cover.${id}.${before}`;
    probing = true;
    void (async () => {
      try {
        await coverage!.notify(token);
        await sleepUnlessAborted(o.coverWaitMs, stop.signal);
        if (!stop.signal.aborted) push({ probe: token });
      } catch (err) {
        log.warn({ err }, 'start-up probe not sent');
        enqueue(gap(reason));
      } finally {
        probing = false;
        settleIdle();
      }
    })();
  };

  // ------------------------------------------------------------- handlers
  const onChange = (event: Parameters<typeof changeMessage>[0]) => enqueue(changeMessage(event));
  const onBarrier = (token: string) => {
    const cover = COVER.exec(token);
    if (cover) {
      // Another relay's start-up probe: forward it only if this session has listened since before it began.
      if (cover[1] !== id && since !== undefined && since < BigInt(cover[2]!)) enqueue(barrierMessage(token));
      return;
    }
    // A token that cannot be a message id is someone else's NOTIFY on our channel.
    if (barrierToken.safeParse(token).success) enqueue(barrierMessage(token));
    else log.warn({ token: token.slice(0, 100) }, 'barrier token ignored: not a valid token');
  };
  const onInvalid = (reason: string, sample: string, bytes: number, ours: boolean) => {
    // Another program's payload on the channel is not a change; an unreadable one of ours may be one in a newer format.
    if (!ours) return;
    enqueue({ v: 1, kind: 'invalid', reason: reason.slice(0, 1000), sample: sample.slice(0, 1000), bytes });
  };
  const onTransaction = (tx: HandedTransaction) => {
    if (stop.signal.aborted) return;
    const at = lsnKey(parseLsn(tx.commitLsn));
    tx.events.forEach((e, i) => push(changeMessage(e, `${at}.${i}`)));
    if (tx.invalid) push({ v: 1, kind: 'invalid', reason: tx.invalid.slice(0, 1000), sample: '', bytes: 0 });
    for (const token of tx.barriers) if (barrierToken.safeParse(token).success) push(barrierMessage(token));
    push({ ack: tx.commitLsn });
    // The bus is away: stop reading rather than drop (the slot keeps the WAL). Resumed once drained.
    if (queue.length >= o.maxQueue && !slot!.isPaused) {
      stats.pauses++;
      log.warn({ queued: queue.length }, 'bus unreachable: reading the replication slot paused until it drains');
      slot!.pause('relay queue full while the bus is unreachable');
    }
  };
  const onUp = (info: UpInfo) => {
    const session = ++sessions;
    since = undefined;
    if (listening) void serverNow().then((t) => session === sessions && source.isUp && (since = t));
    if (info.lost) enqueue(gap(`${source.resumable ? 'changes' : 'notifications'} lost: ${info.lost}`));
    else if (info.first && o.gapOnStart && !source.resumable) startGap();
  };
  const onLost = (reason: string) => enqueue(gap(`changes lost: ${reason}`));
  const onDown = (reason: string) => {
    sessions++;
    since = undefined;
    log.warn({ reason }, 'relay source down');
  };
  if (slot) slot.handTransactionsTo(onTransaction);
  else {
    source.on('change', onChange);
    source.on('barrier', onBarrier);
    source.on('invalid', onInvalid);
  }
  source.on('up', onUp);
  source.on('lost', onLost);
  source.on('down', onDown);

  // --------------------------------------------------------- publish loop
  const publish = async (m: BusMessage, ensured: { ok: boolean }) => {
    await publisher.connect();
    if (!ensured.ok) {
      await publisher.ensureStream();
      ensured.ok = true;
    }
    return publisher.publish(m);
  };
  stop.signal.addEventListener('abort', () => wake?.(), { once: true });
  const publishLoop = (async () => {
    const ensured = { ok: false };
    while (!stop.signal.aborted) {
      const next = queue.shift();
      if (!next) {
        busy = false;
        if (slot?.isPaused && !closing) slot.resume();
        settleIdle();
        await new Promise<void>((resolve) => (wake = resolve));
        wake = undefined;
        continue;
      }
      busy = true;
      stats.queued = queue.length;
      if ('ack' in next) {
        slot?.confirm(next.ack);
        stats.confirmed++;
        continue;
      }
      const message = isMessage(next) ? next : barrierMessage(next.probe);
      for (let attempt = 1; !stop.signal.aborted; attempt++) {
        try {
          const r = await publish(message, ensured);
          if (r.duplicate) stats.duplicates++;
          else stats.published++;
          if (!isMessage(next)) {
            // Our own probe: a duplicate means another relay forwarded it first, so it covered us.
            if (r.duplicate) {
              stats.coveredStarts++;
              log.info('start covered by a relay listening since before this one: no gap');
            } else {
              enqueue(gap('relay started; no relay listening since before it relayed its probe, so changes committed before it listened may be missing'));
            }
          }
          break;
        } catch (err) {
          ensured.ok = false; // the stream may be what went missing
          stats.publishFailures++;
          stats.lastPublishError = (err as Error).message;
          log.warn({ attempt, kind: message.kind, err }, 'publish failed; retrying');
          await sleepUnlessAborted(backoffDelay(attempt, o.backoff), stop.signal);
        }
      }
    }
    busy = false;
    for (const w of idleWaiters) w();
    idleWaiters = [];
  })();

  const drained = (): Promise<void> =>
    !busy && queue.length === 0 && !probing ? Promise.resolve() : new Promise<void>((resolve) => idleWaiters.push(resolve));

  let stopping: Promise<void> | undefined;
  const relay: Relay = {
    id,
    get stats() {
      return { ...stats, queued: queue.length };
    },
    drained,
    stop: ({ drainMs = 5_000 } = {}) =>
      (stopping ??= (async () => {
        closing = true;
        if (slot) slot.handTransactionsTo(undefined);
        source.off('change', onChange);
        source.off('barrier', onBarrier);
        source.off('invalid', onInvalid);
        source.off('up', onUp);
        source.off('lost', onLost);
        // Nothing more is taken in; what is queued is published (and, from a slot, confirmed) first.
        if (drainMs > 0) {
          let timer: NodeJS.Timeout | undefined;
          await Promise.race([drained(), new Promise<void>((resolve) => (timer = setTimeout(resolve, drainMs)))]);
          clearTimeout(timer);
        }
        await source.close().catch((err: Error) => log.warn({ err }, 'closing the source failed'));
        stop.abort();
        await publishLoop;
        source.off('down', onDown);
        if (queue.length) log.warn({ dropped: queue.length }, 'relay stopped with messages unpublished');
        await publisher.close().catch(() => {});
      })()),
  };

  try {
    await source.start();
  } catch (err) {
    await relay.stop({ drainMs: 0 });
    throw err;
  }
  log.info('relay running');
  return relay;
}
