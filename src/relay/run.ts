import type { Logger } from 'pino';
import { loadConfig, type Env } from '../config.js';
import pg from 'pg';
import { withRetry } from '../backend/retry.js';
import { replicationTables } from '../capture/publication.js';
import { bindingMapper } from '../sources/replication/mapper.js';
import { barrierChannel } from '../contract/change-event.js';
import { ConfigError } from '../contract/errors.js';
import { bindDeclaration, loadDeclaration } from '../schema/load.js';
import { createLogger } from '../sidecar/logger.js';
import { createBus } from '../sources/bus/create.js';
import { parseBusUrl } from '../sources/bus/bus.js';
import { PgListenSource } from '../sources/pg-listen.js';
import { createReplicationSource } from '../sources/replication/create.js';
import type { ChangeSource } from '../sources/source.js';
import { pgCoverage, runRelay, type RelayCoverage } from './relay.js';

const SIGNALS = ['SIGTERM', 'SIGINT'] as const;

/** The schema unqualified table names resolve in, for the publication (retried: the database may still be starting). */
async function currentSchema(databaseUrl: string): Promise<string> {
  return withRetry(async () => {
    const client = new pg.Client({ connectionString: databaseUrl, connectionTimeoutMillis: 5_000 });
    await client.connect();
    try {
      return (await client.query<{ s: string }>('SELECT current_schema() AS s')).rows[0]!.s;
    } finally {
      await client.end().catch(() => {});
    }
  }, { retries: 10, minTimeoutMs: 100, maxTimeoutMs: 5_000 });
}
/** Period of the relay's stats line. */
const SUMMARY_INTERVAL_MS = 60_000;

/**
 * `memory-sync relay`: LISTEN on DATABASE_URL (or MEMORY_SYNC_LISTEN_URL, a
 * direct connection), or with MEMORY_SYNC_SOURCE=replication read the
 * replication slot, and publish every change and barrier to
 * MEMORY_SYNC_BUS_URL until SIGTERM. Run two for availability: LISTEN relays
 * both publish and the bus keeps one copy of each message; replication
 * relays share the slot, one reads and the other waits to take over.
 * Configured by the same variables as `start`.
 */
export async function runRelayCommand(env: Env = process.env, logger?: Logger): Promise<void> {
  const config = loadConfig(env);
  if (!config.databaseUrl) throw new ConfigError('DATABASE_URL', 'is required for `memory-sync relay`');
  if (!env.MEMORY_SYNC_BUS_URL) throw new ConfigError('MEMORY_SYNC_BUS_URL', 'is required for `memory-sync relay`');
  const bus = parseBusUrl(env.MEMORY_SYNC_BUS_URL);
  const log = logger ?? createLogger(config);

  const L = config.engine.listener;
  const backoff = { minMs: L.retryMinMs, maxMs: L.retryMaxMs };
  const databaseUrl = L.databaseUrl ?? config.databaseUrl;
  // The declaration says what is captured: the channel the triggers notify on, or the tables a slot publishes.
  const binding = bindDeclaration(await loadDeclaration(env.MEMORY_SYNC_CONFIG || undefined));
  const mode = config.engine.source ?? (binding.captureSource === 'replication' ? 'replication' : 'listen');
  if (mode === 'listen' && binding.captureSource === 'replication') {
    throw new ConfigError('MEMORY_SYNC_SOURCE', `"listen" hears nothing: ${binding.source} captures by replication (no triggers)`);
  }
  let source: ChangeSource;
  let coverage: (RelayCoverage & { close(): Promise<void> }) | undefined;
  if (mode === 'replication') {
    const schema = await currentSchema(databaseUrl);
    source = createReplicationSource({
      databaseUrl,
      logger: log,
      replication: config.engine.replication,
      listener: L,
      confirm: 'manual',
      tables: replicationTables(binding, schema),
      mapper: bindingMapper(binding, schema),
    });
  } else {
    source = new PgListenSource({ databaseUrl, channel: binding.channel, logger: log.child({ component: 'listen' }), paranoidIntervalMs: L.paranoidIntervalMs, queryTimeoutMs: L.queryTimeoutMs, backoff });
    coverage = pgCoverage(databaseUrl, barrierChannel(binding.channel)); // a restart covered by another relay publishes no gap
  }
  const publisher = await createBus(bus, { backoff });
  let stop: (signal: string) => void = () => {};
  const stopped = new Promise<string>((resolve) => (stop = resolve));
  const onSignal = (signal: NodeJS.Signals) => stop(signal);
  for (const s of SIGNALS) process.on(s, onSignal);
  try {
    const relay = await Promise.race([runRelay({ source, publisher, logger: log, coverage }), stopped.then(() => undefined)]);
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
    await coverage?.close().catch(() => {});
  }
}
