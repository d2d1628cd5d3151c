/**
 * An in-process memory-sync host on the replication source, in a process of
 * its own, for tests that kill it with SIGKILL. argv: databaseUrl, slot.
 * Prints one JSON object a line: {ready}, then {tx} for every change event it
 * applied. Reads commands from stdin: {"warm": [ids]} → {warmed},
 * {"read": [ids]} → sync(), then {read: {id: displayName}, flushes}.
 */
import { createInterface } from 'node:readline';
import pino from 'pino';
import { MemorySync } from '../../../src/client/memory-sync.js';

const [databaseUrl, slot] = process.argv.slice(2);
const out = (o: unknown) => process.stdout.write(`${JSON.stringify(o)}\n`);
const host = new MemorySync({
  databaseUrl: databaseUrl!,
  source: 'replication',
  replication: { slot: slot!, statusIntervalMs: 50 },
  listener: { retryMinMs: 20, retryMaxMs: 200 },
  logger: pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' }, pino.destination(2)),
  summaryIntervalMs: 0,
  poolSize: 2,
});
host.on('invalidation', (info) => out({ tx: info.event.txid }));
await host.start();
out({ ready: true, lost: host.replicationStats?.lastLossReason ?? null });
for await (const line of createInterface({ input: process.stdin })) {
  const cmd = JSON.parse(line) as { warm?: string[]; read?: string[] };
  if (cmd.warm) {
    for (const id of cmd.warm) await host.getPersonality(id);
    out({ warmed: cmd.warm.length });
  }
  if (cmd.read) {
    await host.sync(10_000);
    const read: Record<string, string | null> = {};
    for (const id of cmd.read) read[id] = (await host.getPersonality(id))?.displayName ?? null;
    out({ read, flushes: host.stats().flushes });
  }
}
