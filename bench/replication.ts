/**
 * Capture cost and latency: logical replication beside the NOTIFY triggers,
 * on the private wal_level=logical cluster (scripts/ensure-logical-cluster.sh).
 *
 * - Writers: pgbench, 32 clients inserting memories, each statement its own
 *   transaction, into (a) an uncaptured twin table (same columns, indexes and
 *   foreign key; nothing attached): the baseline, run before and after;
 *   (b) `memories` with memory-sync attached in replication mode, no
 *   triggers; (c) `memories` with the generated triggers (triggerScript) and
 *   a LISTEN memory-sync attached. Goal: (b) ≥ 0.9× (a).
 * - Commit → eviction (from sending the committing UPDATE of a cached
 *   personality to the cache core's eviction), p50/p99, at rest and while
 *   (b) or (c) runs, replication beside LISTEN. synchronous_commit stays on:
 *   logical decoding sends only flushed WAL.
 *
 *   npx tsx bench/replication.ts      (BENCH_QUICK=1 for a short run)
 *
 * `benchReplication()` returns rows in bench/run.ts's figure shape.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import pg from 'pg';
import { MemorySync } from '../src/client/memory-sync.js';
import type { ChangeEvent } from '../src/contract/change-event.js';
import { migrate } from '../src/migrations/migrate.js';
import { DEFAULT_MIGRATIONS_DIR, DEFAULT_SCHEMA_PATH } from '../src/paths.js';
import { triggerScript } from '../src/capture/triggers.js';
import { BUILTIN_DECLARATION } from '../src/schema/builtin.js';
import { bindDeclaration } from '../src/schema/load.js';
import type { Figure } from './figure.js';

export interface ReplicationBenchOptions {
  /** Admin URL of a wal_level=logical server. @defaultValue BENCH_REPLICATION_URL, TEST_REPLICATION_URL, or 127.0.0.1:5441 */
  adminUrl?: string;
  /** Seconds per pgbench run. @defaultValue 10 */
  seconds?: number;
  /** Commits measured at rest per mode. @defaultValue 300 */
  commits?: number;
  /** pgbench clients. @defaultValue 32 */
  clients?: number;
  /** Replication runs, each after a twin run (and one more twin run at the end). @defaultValue 2 */
  rounds?: number;
}

const round = (x: number, d = 3) => Math.round(x * 10 ** d) / 10 ** d;
const now = () => performance.now();
function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
}

const TRIGGERS = ['memory_sync_insert', 'memory_sync_update', 'memory_sync_delete', 'memory_sync_truncate'];
const CAPTURED = ['personalities', 'llm_configs', 'memories'];

function pgbenchPath(): string {
  for (const p of ['/usr/lib/postgresql/15/bin/pgbench', '/usr/bin/pgbench']) if (existsSync(p)) return p;
  return 'pgbench';
}

/** Runs pgbench with `script`; resolves with its TPS. */
function pgbench(url: string, script: string, seconds: number, clients: number, vars: Record<string, string>): Promise<number> {
  const dir = mkdtempSync(join(tmpdir(), 'ms-pgbench-'));
  const file = join(dir, 'script.sql');
  writeFileSync(file, script);
  const u = new URL(url);
  const args = ['-n', '-c', String(clients), '-j', String(Math.min(clients, 4)), '-T', String(seconds), '-f', file, '-h', u.hostname, '-p', u.port || '5432', '-U', decodeURIComponent(u.username || 'postgres')];
  for (const [k, v] of Object.entries(vars)) args.push('-D', `${k}=${v}`);
  args.push(u.pathname.slice(1));
  return new Promise((resolve, reject) => {
    const child = spawn(pgbenchPath(), args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    child.on('error', reject);
    child.on('exit', (code) => {
      rmSync(dir, { recursive: true, force: true });
      const m = /tps = ([\d.]+) \(without initial connection time\)/.exec(out);
      if (code !== 0 || !m) reject(new Error(`pgbench failed (${code}): ${out.slice(-800)}`));
      else resolve(Number(m[1]));
    });
  });
}

const insertInto = (table: string) =>
  `INSERT INTO ${table} ("personalityId", "channelId", content, embedding) VALUES (:pid, 'bench', 'a memory written by pgbench', array_fill(0.01::real, ARRAY[1536])::vector);\n`;

/**
 * Replication mode has no triggers at all (dropped, as adopt will): a merely
 * disabled statement trigger with transition tables still makes PostgreSQL
 * collect every inserted row for it. Trigger mode installs the generated
 * triggers of the built-in declaration (what `memory-sync migrate` does).
 */
async function setTriggers(c: pg.Client, installed: boolean): Promise<void> {
  if (installed) {
    await c.query(triggerScript(bindDeclaration({ declaration: BUILTIN_DECLARATION, source: 'built-in', baseDir: process.cwd() })));
    return;
  }
  for (const t of CAPTURED) for (const trg of TRIGGERS) await c.query(`DROP TRIGGER IF EXISTS ${trg} ON ${t}`);
}

/** Commit → eviction of a cached personality, one commit at a time from idle, until `n` or `until()`. */
async function lag(host: MemorySync, writer: pg.Client, id: string, n: number, until?: () => boolean): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < n || (until && !until()); i++) {
    if (until?.()) break;
    await host.getPersonality(id); // cached, so the event really evicts
    await new Promise((r) => setTimeout(r, 1));
    const evicted = new Promise<number>((resolve) => {
      const on = (info: { event: ChangeEvent; action: string }) => {
        if (info.event.model !== 'Personality' || info.action !== 'evicted') return;
        host.off('invalidation', on);
        resolve(now());
      };
      host.on('invalidation', on);
    });
    const t0 = now();
    await writer.query(`UPDATE personalities SET "displayName" = $2 WHERE id = $1`, [id, `lag-${i}`]);
    out.push((await evicted) - t0);
  }
  return out;
}

export async function benchReplication(options: ReplicationBenchOptions = {}): Promise<Figure[]> {
  const adminUrl = options.adminUrl ?? process.env.BENCH_REPLICATION_URL ?? process.env.TEST_REPLICATION_URL ?? 'postgresql://postgres@127.0.0.1:5441/postgres';
  const seconds = options.seconds ?? 10;
  const commits = options.commits ?? 300;
  const clients = options.clients ?? 32;
  const loadSeconds = Math.max(2, Math.round(seconds / 2));
  const rounds = options.rounds ?? 2;
  const admin = new pg.Client({ connectionString: adminUrl });
  try {
    await admin.connect();
    const { rows } = await admin.query<{ w: string }>(`SELECT current_setting('wal_level') AS w`);
    if (rows[0]!.w !== 'logical') throw new Error(`wal_level is ${rows[0]!.w}`);
  } catch (err) {
    await admin.end().catch(() => {});
    return [{ figure: 'replication bench', unit: '', value: 0, goal: 'a wal_level=logical cluster: bash scripts/ensure-logical-cluster.sh', met: false, detail: { error: (err as Error).message } }];
  }
  const name = `ms_bench_repl_${process.pid}`;
  await admin.query(`DROP DATABASE IF EXISTS "${name}"`);
  await admin.query(`CREATE DATABASE "${name}"`);
  const u = new URL(adminUrl);
  u.pathname = `/${name}`;
  const url = u.toString();
  const slot = `ms_bench_${process.pid}`;
  const figures: Figure[] = [];
  const db = new pg.Client({ connectionString: url });
  try {
    await migrate({ databaseUrl: url, migrationsDir: DEFAULT_MIGRATIONS_DIR, schemaPath: DEFAULT_SCHEMA_PATH });
    await db.connect();
    // The twin: same columns, indexes, defaults and foreign key; no triggers, not published.
    await db.query('CREATE TABLE memories_twin (LIKE memories INCLUDING ALL)');
    await db.query(`ALTER TABLE memories_twin ADD FOREIGN KEY ("personalityId") REFERENCES personalities(id) ON DELETE CASCADE`);
    const pid = (await db.query<{ id: string }>(`INSERT INTO personalities (name, "displayName", "systemPrompt", "updatedAt") VALUES ('bench-writer', 'w', 'p', now()) RETURNING id`)).rows[0]!.id;
    const target = (await db.query<{ id: string }>(`INSERT INTO personalities (name, "displayName", "systemPrompt", "updatedAt") VALUES ('bench-lag', 'l', 'p', now()) RETURNING id`)).rows[0]!.id;
    const vars = { pid: `'${pid}'` };
    const writer = new pg.Client({ connectionString: url, application_name: 'memory-sync-bench' });
    await writer.connect();
    const hostOptions = { databaseUrl: url, summaryIntervalMs: 0, poolSize: 2 };

    // Replication: no triggers; memory-sync reads the slot. Its TPS runs alternate with the twin's
    // (twin, replication, twin, …, twin), so a drifting machine moves both alike.
    const twin: number[] = [];
    const replTps: number[] = [];
    await setTriggers(db, false);
    const repl = new MemorySync({ ...hostOptions, source: 'replication', replication: { slot } });
    await repl.start();
    for (let r = 0; r < rounds; r++) {
      twin.push(await pgbench(url, insertInto('memories_twin'), seconds, clients, vars));
      replTps.push(await pgbench(url, insertInto('memories'), seconds, clients, vars));
    }
    twin.push(await pgbench(url, insertInto('memories_twin'), seconds, clients, vars));
    const tpsRepl = replTps.reduce((a, b) => a + b, 0) / replTps.length;
    // Then commit → eviction at rest, and under the same load (the probe's own writes make it a separate run).
    const replRest = await lag(repl, writer, target, commits);
    let loadDone = false;
    const replRun = pgbench(url, insertInto('memories'), loadSeconds, clients, vars).finally(() => (loadDone = true));
    const replLoad = await lag(repl, writer, target, 0, () => loadDone);
    await replRun;
    await repl.close();
    await db.query('SELECT pg_drop_replication_slot($1)', [slot]);

    // Triggers: today's NOTIFY capture, a LISTEN memory-sync attached.
    await setTriggers(db, true);
    const listen = new MemorySync(hostOptions);
    await listen.start();
    const tpsTrig = await pgbench(url, insertInto('memories'), seconds, clients, vars);
    const listenRest = await lag(listen, writer, target, commits);
    loadDone = false;
    const trigRun = pgbench(url, insertInto('memories'), loadSeconds, clients, vars).finally(() => (loadDone = true));
    const listenLoad = await lag(listen, writer, target, 0, () => loadDone);
    await trigRun;
    await listen.close();

    await writer.end();
    const base = twin.reduce((a, b) => a + b, 0) / twin.length;
    const twinDetail = { twinMin: Math.round(Math.min(...twin)), twinMax: Math.round(Math.max(...twin)), clients, seconds, rounds };
    figures.push({
      figure: `pgbench ${clients} inserting clients, replication mode`,
      unit: 'tps',
      value: Math.round(tpsRepl),
      baseline: Math.round(base),
      baselineName: 'uncaptured twin table, runs alternating with it (mean)',
      goal: '≥ 0.9× the twin',
      met: tpsRepl >= 0.9 * base,
      detail: { ratio: round(tpsRepl / base, 2), replMin: Math.round(Math.min(...replTps)), replMax: Math.round(Math.max(...replTps)), ...twinDetail },
    });
    figures.push({
      figure: `pgbench ${clients} inserting clients, trigger mode (NOTIFY)`,
      unit: 'tps',
      value: Math.round(tpsTrig),
      baseline: Math.round(base),
      baselineName: 'uncaptured twin table, same run (mean)',
      goal: 'reported beside replication',
      met: true,
      detail: { ratio: round(tpsTrig / base, 2), ...twinDetail },
    });
    const lagRow = (what: string, ours: number[], theirs: number[], p: number): Figure => ({
      figure: `commit → eviction p${p}, ${what}, replication`,
      unit: 'ms',
      value: round(pct(ours, p)),
      baseline: round(pct(theirs, p)),
      baselineName: `LISTEN (triggers), ${what}, same run`,
      goal: 'reported beside LISTEN',
      met: true,
      detail: { commits: ours.length, listenCommits: theirs.length },
    });
    figures.push(lagRow('at rest', replRest, listenRest, 50), lagRow('at rest', replRest, listenRest, 99));
    figures.push(lagRow(`under ${clients}-client load`, replLoad, listenLoad, 50), lagRow(`under ${clients}-client load`, replLoad, listenLoad, 99));
  } finally {
    await db.end().catch(() => {});
    await admin.query('SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1 AND NOT active', [slot]).catch(() => {});
    await admin.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()', [name]);
    await admin.query(`DROP DATABASE IF EXISTS "${name}"`).catch(() => {});
    await admin.end();
  }
  return figures;
}

async function main(): Promise<void> {
  const quick = process.env.BENCH_QUICK === '1';
  const rows = await benchReplication({ seconds: quick ? 4 : 10, commits: quick ? 100 : 300, rounds: quick ? 1 : 2 });
  const width = Math.max(...rows.map((r) => r.figure.length));
  console.log(`\nmemory-sync replication capture (node ${process.version})\n`);
  for (const r of rows) {
    const base = r.baseline === undefined ? '' : `   baseline: ${r.baseline} ${r.unit} (${r.baselineName})`;
    console.log(`${r.met ? 'ok  ' : 'MISS'} ${r.figure.padEnd(width)}  ${String(r.value).padStart(8)} ${r.unit}${base}   goal: ${r.goal}${r.detail ? `   ${JSON.stringify(r.detail)}` : ''}`);
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().then(
    () => process.exit(0),
    (err) => {
      console.error(err);
      process.exit(1);
    },
  );
}
