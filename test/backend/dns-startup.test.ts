import { randomBytes } from 'node:crypto';
import dns, { type LookupAddress } from 'node:dns';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createMemorySync } from '../../src/client/memory-sync.js';
import { PermanentError } from '../../src/contract/errors.js';
import { createMigratedDatabase, type TestDb } from '../helpers/db.js';

// Issue 18: a database host name that does not resolve at start (ENOTFOUND,
// EAI_AGAIN) is retried for `startup.dnsRetryMs`, then start() fails with the
// permanent error. Names under .invalid never resolve (RFC 6761): the system
// resolver answers them with a real ENOTFOUND.

let db: TestDb;
let hostsDir: string;
beforeAll(async () => {
  db = await createMigratedDatabase('ms_dns');
  hostsDir = mkdtempSync(join(tmpdir(), 'memory-sync-hosts-'));
});
afterAll(async () => {
  await db?.drop();
  rmSync(hostsDir, { recursive: true, force: true });
});

const uniqueHost = () => `db-${randomBytes(4).toString('hex')}.memory-sync.invalid`;
const withHost = (url: string, host: string) => {
  const u = new URL(url);
  u.hostname = host;
  return u.toString();
};

/** A logger that records messages, to see the retries happen. */
function recorder() {
  const lines: Array<Record<string, unknown>> = [];
  const logger = pino({ level: 'warn' }, { write: (s: string) => void lines.push(JSON.parse(s) as Record<string, unknown>) });
  return { logger, lines };
}

describe('start() and a database host that does not resolve', () => {
  it('retries ENOTFOUND for the window, then rejects with the permanent error naming the host', async () => {
    const host = uniqueHost();
    const { logger, lines } = recorder();
    const memory = createMemorySync({ databaseUrl: withHost(db.url, host), logger, startup: { dnsRetryMs: 1_500 }, summaryIntervalMs: 0 });
    const t = performance.now();
    const err = await memory.start().catch((e: unknown) => e);
    const ms = performance.now() - t;
    await memory.close();
    expect(err).toBeInstanceOf(PermanentError);
    expect((err as Error).message).toMatch(new RegExp(`database host "${host.replace(/\./g, '\\.')}" not found \\(still, after \\d+ s of retries\\): fix the host in DATABASE_URL`));
    expect(ms).toBeGreaterThanOrEqual(1_500);
    expect(lines.some((l) => l.msg === 'database host does not resolve yet; retrying' && l.host === host && l.code === 'ENOTFOUND')).toBe(true);
  }, 30_000);

  it('with dnsRetryMs 0 it fails at once, without a retry', async () => {
    const host = uniqueHost();
    const { logger, lines } = recorder();
    const memory = createMemorySync({ databaseUrl: withHost(db.url, host), logger, startup: { dnsRetryMs: 0 }, summaryIntervalMs: 0 });
    const err = await memory.start().catch((e: unknown) => e);
    await memory.close();
    expect(err).toBeInstanceOf(PermanentError);
    expect((err as Error).message).toBe(`database host "${host}" not found: fix the host in DATABASE_URL`);
    expect(lines.filter((l) => l.msg === 'database host does not resolve yet; retrying')).toEqual([]);
  });

  it('waits while the name does not resolve and starts once it does', async () => {
    // pg connects through net.Socket#connect, which takes a `lookup`: the
    // pool's sockets look names up in a hosts file of this test's own first,
    // then through the system resolver, as getaddrinfo does with /etc/hosts.
    const host = uniqueHost();
    const hostsFile = join(hostsDir, 'hosts');
    writeFileSync(hostsFile, '');
    type Callback = (err: NodeJS.ErrnoException | null, address: string | LookupAddress[], family?: number) => void;
    const lookup = ((name: string, options: dns.LookupOptions, callback: Callback) => {
      const line = readFileSync(hostsFile, 'utf8')
        .split('\n')
        .map((l) => l.trim().split(/\s+/))
        .find(([, n]) => n === name);
      if (!line) return dns.lookup(name, options, callback as never);
      const address: LookupAddress = { address: line[0]!, family: net.isIPv6(line[0]!) ? 6 : 4 };
      if (options.all) callback(null, [address]);
      else callback(null, address.address, address.family);
    }) as net.LookupFunction;
    class LookupSocket extends net.Socket {
      override connect(...args: unknown[]): this {
        if (typeof args[0] === 'number' && typeof args[1] === 'string') return super.connect({ port: args[0], host: args[1], lookup });
        return super.connect(...(args as Parameters<net.Socket['connect']>));
      }
    }
    const pool = new pg.Pool({ connectionString: withHost(db.url, host), stream: () => new LookupSocket(), max: 2 });
    const { logger, lines } = recorder();
    const memory = createMemorySync({ pool, listener: { databaseUrl: db.url }, logger, startup: { dnsRetryMs: 30_000 }, summaryIntervalMs: 0 });
    try {
      // The name is added once start() has retried it twice.
      let added = 0;
      const retried = new Promise<void>((resolve) => {
        const timer = setInterval(() => {
          if (lines.filter((l) => l.msg === 'database host does not resolve yet; retrying' && l.host === host).length >= 2) {
            clearInterval(timer);
            resolve();
          }
        }, 10);
      });
      const started = memory.start();
      await retried;
      writeFileSync(hostsFile, `127.0.0.1 ${host}\n`);
      added = performance.now();
      await started;
      expect(performance.now()).toBeGreaterThan(added);
      expect(memory.sourceState).toBe('up');
      const { rows } = await pool.query<{ ok: number }>('SELECT 1 AS ok');
      expect(rows).toEqual([{ ok: 1 }]);
    } finally {
      await memory.close();
      await pool.end();
    }
  }, 60_000);
});
