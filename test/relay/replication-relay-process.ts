/**
 * A replication relay in a process of its own, for tests that kill it with
 * SIGKILL. argv: databaseUrl, bus config (JSON), relay id, slot. Prints
 * "standby" while another process holds the slot, then "ready" once it reads
 * the slot and what it queued at start is on the bus. argv[5], optional: ms
 * each publish waits first, so that a kill finds messages received and not
 * yet published.
 */
import pino from 'pino';
import { runRelay } from '../../src/relay/relay.js';
import { createBus } from '../../src/sources/bus/create.js';
import { type BusConfig } from '../../src/sources/bus/bus.js';
import { ReplicationSource } from '../../src/sources/replication/source.js';
import { builtinCapture } from '../sources/replication/helpers.js';

const [databaseUrl, busJson, id, slot, delayMs] = process.argv.slice(2);
const logger = pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' }, pino.destination(2));
const backoff = { minMs: 20, maxMs: 200 };
const source = new ReplicationSource({
  databaseUrl: databaseUrl!,
  logger,
  slot: slot!,
  ...builtinCapture(),
  confirm: 'manual',
  statusIntervalMs: 50,
  paranoidIntervalMs: 1_000,
  queryTimeoutMs: 2_000,
  backoff,
});
let standby = false;
source.on('retry', (_n, err) => {
  if (!standby && (err as { code?: string }).code === '55006') {
    standby = true;
    process.stdout.write('standby\n');
  }
});
const publisher = await createBus(JSON.parse(busJson!) as BusConfig, { backoff });
const delay = Number(delayMs ?? 0);
if (delay > 0) {
  const publish = publisher.publish.bind(publisher);
  publisher.publish = async (m) => {
    await new Promise((r) => setTimeout(r, delay));
    return publish(m);
  };
}
const relay = await runRelay({ source, publisher, logger, id, backoff });
await relay.drained();
process.stdout.write('ready\n');
process.on('SIGTERM', () => void relay.stop().then(() => process.exit(0)));
