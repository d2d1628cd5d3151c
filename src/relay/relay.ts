import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import { z } from 'zod';
import { ConfigError } from '../contract/errors.js';
import { timerMs } from '../contract/primitives.js';
import { backoffDelay, DEFAULT_BACKOFF, sleepUnlessAborted, type BackoffOptions } from '../sources/backoff.js';
import { barrierMessage, barrierToken, changeMessage, type BusMessage } from '../contract/bus-message.js';
import { type Bus } from '../sources/bus/bus.js';
import type { ChangeSource, UpInfo } from '../sources/source.js';

export interface RelayOptions {
  /** Where changes come from: PostgreSQL LISTEN (src/sources/pg-listen.ts). The relay starts and closes it. */
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
   * Messages held while the bus is unreachable. Past this the relay drops
   * them and publishes one gap instead (subscribers flush), rather than grow
   * without bound.
   * @defaultValue 100000 — minutes of a busy database, tens of MB at most.
   */
  maxQueue?: number;
  /**
   * Publish a gap when the source first comes up. Changes committed while
   * no relay listened (a deploy of the only relay) reach no subscriber;
   * the gap makes them flush once. With two relays always running, a
   * restart of one costs one fleet-wide flush it did not strictly need.
   * @defaultValue true — sound with one relay; see above for the cost with several.
   */
  gapOnStart?: boolean;
}

export interface RelayStats {
  /** Messages the bus took as new. */
  published: number;
  /** Messages the bus already had (another relay's copy, or a retried publish). */
  duplicates: number;
  /** Gap messages this relay sent. */
  gaps: number;
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
});

/**
 * Publishes every change and barrier the source emits to the bus, in the
 * order received, one at a time (so the stream's order is commit order and
 * a barrier never overtakes a change), each retried until the bus takes it.
 * Message ids are deterministic (busMessageId), so two or more relays on the
 * same database are harmless: the bus keeps the first copy of each.
 *
 * Resolves once the source is up (its start-up gap is queued; drained()
 * waits for the bus to take it). Rejects when the source cannot start for good (PermanentError).
 */
export async function runRelay(options: RelayOptions): Promise<Relay> {
  const parsed = optionsSchema.safeParse({
    id: options.id,
    backoff: options.backoff,
    maxQueue: options.maxQueue,
    gapOnStart: options.gapOnStart,
  });
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new ConfigError(`relay.${issue?.path.join('.') ?? 'options'}`, issue?.message ?? 'invalid');
  }
  const o = parsed.data;
  const { source, publisher, logger } = options;
  const id = o.id ?? `relay-${randomBytes(4).toString('hex')}`;
  const log = logger.child({ relay: id, bus: publisher.kind });
  const stop = new AbortController();
  const queue: BusMessage[] = [];
  let gapCount = 0;
  let wake: (() => void) | undefined;
  let idleWaiters: Array<() => void> = [];
  let busy = false;
  const stats: RelayStats = { published: 0, duplicates: 0, gaps: 0, publishFailures: 0, queued: 0, lastPublishError: null };

  const enqueue = (m: BusMessage) => {
    if (stop.signal.aborted) return;
    if (queue.length >= o.maxQueue) {
      const dropped = queue.length;
      queue.length = 0;
      log.error({ dropped }, 'bus unreachable too long: queue dropped, subscribers will flush');
      queue.push(gap(`relay queue overflowed while the bus was unreachable (${dropped} messages dropped)`));
    }
    queue.push(m);
    stats.queued = queue.length;
    wake?.();
  };
  const gap = (reason: string): BusMessage => {
    stats.gaps++;
    return { v: 1, kind: 'gap', reason, relay: id, n: gapCount++ };
  };

  const onChange = (event: Parameters<typeof changeMessage>[0]) => enqueue(changeMessage(event));
  const onBarrier = (token: string) => {
    // A token that cannot be a message id is someone else's NOTIFY on our channel.
    if (barrierToken.safeParse(token).success) enqueue(barrierMessage(token));
    else log.warn({ token: token.slice(0, 100) }, 'barrier token ignored: not a valid token');
  };
  const onInvalid = (reason: string, sample: string, bytes: number, ours: boolean) => {
    // Another program's payload on the channel is not a change; an unreadable one of ours may be one in a newer format.
    if (!ours) return;
    enqueue({ v: 1, kind: 'invalid', reason: reason.slice(0, 1000), sample: sample.slice(0, 1000), bytes });
  };
  const onUp = (info: UpInfo) => {
    if (info.lost) enqueue(gap(`notifications lost: ${info.lost}`));
    else if (info.first && o.gapOnStart) enqueue(gap('relay started; changes committed before it listened were not relayed by it'));
  };
  const onLost = (reason: string) => enqueue(gap(`changes lost: ${reason}`));
  const onDown = (reason: string) => log.warn({ reason }, 'relay source down');
  source.on('change', onChange);
  source.on('barrier', onBarrier);
  source.on('invalid', onInvalid);
  source.on('up', onUp);
  source.on('lost', onLost);
  source.on('down', onDown);

  stop.signal.addEventListener('abort', () => wake?.(), { once: true });
  const publishLoop = (async () => {
    let ensured = false;
    while (!stop.signal.aborted) {
      const next = queue.shift();
      if (!next) {
        busy = false;
        for (const w of idleWaiters) w();
        idleWaiters = [];
        await new Promise<void>((resolve) => (wake = resolve));
        wake = undefined;
        continue;
      }
      busy = true;
      stats.queued = queue.length;
      for (let attempt = 1; !stop.signal.aborted; attempt++) {
        try {
          await publisher.connect();
          if (!ensured) {
            await publisher.ensureStream();
            ensured = true;
          }
          const r = await publisher.publish(next);
          if (r.duplicate) stats.duplicates++;
          else stats.published++;
          break;
        } catch (err) {
          ensured = false; // the stream may be what went missing
          stats.publishFailures++;
          stats.lastPublishError = (err as Error).message;
          log.warn({ attempt, kind: next.kind, err }, 'publish failed; retrying');
          await sleepUnlessAborted(backoffDelay(attempt, o.backoff), stop.signal);
        }
      }
    }
    busy = false;
    for (const w of idleWaiters) w();
    idleWaiters = [];
  })();

  const drained = (): Promise<void> =>
    !busy && queue.length === 0 ? Promise.resolve() : new Promise<void>((resolve) => idleWaiters.push(resolve));

  let stopping: Promise<void> | undefined;
  const relay: Relay = {
    id,
    get stats() {
      return { ...stats, queued: queue.length };
    },
    drained,
    stop: ({ drainMs = 5_000 } = {}) =>
      (stopping ??= (async () => {
        source.off('change', onChange);
        source.off('barrier', onBarrier);
        source.off('invalid', onInvalid);
        source.off('up', onUp);
        source.off('lost', onLost);
        await source.close().catch((err: Error) => log.warn({ err }, 'closing the source failed'));
        if (drainMs > 0) {
          let timer: NodeJS.Timeout | undefined;
          await Promise.race([drained(), new Promise<void>((resolve) => (timer = setTimeout(resolve, drainMs)))]);
          clearTimeout(timer);
        }
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
