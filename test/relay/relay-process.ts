/**
 * A relay in a process of its own, for tests that kill it with SIGKILL.
 * argv: databaseUrl, bus config (JSON), relay id. Prints "ready" once its
 * start-up gap (or the proof that another relay covered its start) is on the bus.
 */
import pino from 'pino';
import { pgCoverage, runRelay } from '../../src/relay/relay.js';
import { createBus } from '../../src/sources/bus/create.js';
import { type BusConfig } from '../../src/sources/bus/bus.js';
import { PgListenSource } from '../../src/sources/pg-listen.js';

const [databaseUrl, busJson, id] = process.argv.slice(2);
const logger = pino({ level: 'silent' });
const backoff = { minMs: 20, maxMs: 200 };
const source = new PgListenSource({ databaseUrl: databaseUrl!, logger, paranoidIntervalMs: 1_000, queryTimeoutMs: 2_000, backoff });
const coverage = pgCoverage(databaseUrl!, 'memory_sync_barrier'); // as `memory-sync relay` runs it
const relay = await runRelay({ source, publisher: await createBus(JSON.parse(busJson!) as BusConfig, { backoff }), logger, id, backoff, coverage });
await relay.drained();
process.stdout.write('ready\n');
process.on('SIGTERM', () => void relay.stop().then(() => process.exit(0)));
