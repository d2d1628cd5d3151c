import type { Logger } from 'pino';
import { loadConfig, type Env } from '../config.js';
import { ConfigError } from '../contract/errors.js';
import { createLogger } from '../sidecar/logger.js';
import { createBus } from '../sources/bus/create.js';
import { parseBusUrl } from '../sources/bus/bus.js';
import { PgListenSource } from '../sources/pg-listen.js';
import { runRelay } from './relay.js';

const SIGNALS = ['SIGTERM', 'SIGINT'] as const;
/** Period of the relay's stats line. */
const SUMMARY_INTERVAL_MS = 60_000;

/**
 * `memory-sync relay`: LISTEN on DATABASE_URL (or MEMORY_SYNC_LISTEN_URL, a
 * direct connection) and publish every change and barrier to
 * MEMORY_SYNC_BUS_URL until SIGTERM. Run two for availability: the bus keeps
 * one copy of each message. Configured by the same variables as `start`.
 */
export async function runRelayCommand(env: Env = process.env, logger?: Logger): Promise<void> {
  const config = loadConfig(env);
  if (!config.databaseUrl) throw new ConfigError('DATABASE_URL', 'is required for `memory-sync relay`');
  if (!env.MEMORY_SYNC_BUS_URL) throw new ConfigError('MEMORY_SYNC_BUS_URL', 'is required for `memory-sync relay`');
  const bus = parseBusUrl(env.MEMORY_SYNC_BUS_URL);
  const log = logger ?? createLogger(config);

  const L = config.engine.listener;
  const backoff = { minMs: L.retryMinMs, maxMs: L.retryMaxMs };
  const source = new PgListenSource({
    databaseUrl: L.databaseUrl ?? config.databaseUrl,
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
