import type { Logger } from 'pino';
import { z } from 'zod';
import { DEFAULTS } from '../client/options.js';
import { ConfigError } from '../errors.js';
import { createLogger } from '../sidecar/logger.js';
import { LOG_LEVELS, type Env } from '../config.js';
import { createBus, parseBusUrl } from '../sources/bus/bus.js';
import { PgListenSource } from '../sources/pg-listen.js';
import { postgresUrl } from '../validation/primitives.js';
import { runRelay } from './relay.js';

const SIGNALS = ['SIGTERM', 'SIGINT'] as const;
/** Period of the relay's stats line. */
const SUMMARY_INTERVAL_MS = 60_000;

function required(env: Env, name: string): string {
  const v = env[name];
  if (!v) throw new ConfigError(name, 'is required for `memory-sync relay`');
  return v;
}

/**
 * `memory-sync relay`: LISTEN on DATABASE_URL (or MEMORY_SYNC_LISTEN_URL, a
 * direct connection) and publish every change and barrier to
 * MEMORY_SYNC_BUS_URL until SIGTERM. Run two for availability: the bus keeps
 * one copy of each message.
 */
export async function runRelayCommand(env: Env = process.env, logger?: Logger): Promise<void> {
  const databaseUrl = postgresUrl.safeParse(required(env, 'DATABASE_URL'));
  if (!databaseUrl.success) throw new ConfigError('DATABASE_URL', databaseUrl.error.issues[0]!.message);
  const listenUrl = env.MEMORY_SYNC_LISTEN_URL ? postgresUrl.safeParse(env.MEMORY_SYNC_LISTEN_URL) : undefined;
  if (listenUrl && !listenUrl.success) throw new ConfigError('MEMORY_SYNC_LISTEN_URL', listenUrl.error.issues[0]!.message);
  const bus = parseBusUrl(required(env, 'MEMORY_SYNC_BUS_URL'));
  const level = z.enum(LOG_LEVELS).safeParse(env.LOG_LEVEL ?? 'info');
  if (!level.success) throw new ConfigError('LOG_LEVEL', `must be one of ${LOG_LEVELS.join(', ')}`);
  const log = logger ?? createLogger({ logLevel: level.data, logPretty: env.LOG_PRETTY === 'true' || env.LOG_PRETTY === '1' });

  const L = DEFAULTS.listener;
  const backoff = { minMs: L.retryMinMs, maxMs: L.retryMaxMs };
  const source = new PgListenSource({
    databaseUrl: listenUrl?.data ?? databaseUrl.data,
    logger: log.child({ component: 'listen' }),
    paranoidIntervalMs: L.paranoidIntervalMs,
    queryTimeoutMs: L.queryTimeoutMs,
    backoff,
  });
  const publisher = await createBus(bus, { backoff });
  let stop: (signal: string) => void = () => {};
  const stopped = new Promise<string>((resolve) => (stop = resolve));
  const onSignal = (signal: NodeJS.Signals) => stop(signal);
  for (const s of SIGNALS) process.on(s, onSignal);
  try {
    const relay = await Promise.race([runRelay({ source, publisher, logger: log }), stopped.then(() => undefined)]);
    if (!relay) {
      await source.close();
      await publisher.close();
      return;
    }
    log.info({ relay: relay.id, bus: bus.kind, stream: bus.stream }, 'relay running');
    const summary = setInterval(() => log.info({ relay: relay.id, stats: relay.stats }, 'relay summary'), SUMMARY_INTERVAL_MS);
    summary.unref();
    const signal = await stopped;
    clearInterval(summary);
    log.info({ signal }, 'relay stopping');
    await relay.stop();
    log.info({ stats: relay.stats }, 'relay stopped');
  } finally {
    for (const s of SIGNALS) process.off(s, onSignal);
  }
}
