/**
 * Declared entities on the test bot's own schema (test/fixtures/bot): a
 * character with its owner, prompt, config link → shared config, and
 * nicknames, read as a bot reads it, beside Prisma's own `findUnique` with
 * the same include on the same database, in the same run. Reads follow a
 * Zipf law over 300 characters; one plain-SQL write in a hundred reads
 * (a character, a shared config, a nickname) keeps evicting.
 *
 *   npx tsx bench/entities.ts [--json]     (BENCH_QUICK=1 for a short run)
 *
 * Run by tsx, not from dist/: the bot's Prisma client is generated at run
 * time, as the tests do (test/helpers/bot.ts).
 */
import { randomUUID } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import pino from 'pino';
import { createMemorySync } from '../src/client/memory-sync.js';
import { memorySyncExtension } from '../src/client/prisma-extension.js';
import type { Declaration } from '../src/schema/declaration.js';
import { adoptBot, BOT_CONFIG, botDatabase, botPrisma, rng, seedBot } from '../test/helpers/bot.js';
import type { Figure } from './figure.js';
import { pct } from './hot-search.js';

const round = (x: number, d = 3) => Math.round(x * 10 ** d) / 10 ** d;
const now = () => performance.now();
const INCLUDE = { include: { owner: true, prompt: true, configLink: { include: { config: true } }, nicknames: true }, omit: { avatar: true } } as const;

export async function benchEntities(options: { quick?: boolean; log?: (l: string) => void } = {}): Promise<Figure[]> {
  const quick = options.quick ?? process.env.BENCH_QUICK === '1';
  const log = options.log ?? ((l: string) => console.error(l));
  const reads = quick ? 3_000 : 20_000;
  const db = await botDatabase('ms_bench_entities');
  const pool = new pg.Pool({ connectionString: db.url, max: 4 });
  const writer = new pg.Client({ connectionString: db.url });
  const figures: Figure[] = [];
  try {
    await adoptBot(db);
    await writer.connect();
    log('entities: seeding 300 characters…');
    const world = await seedBot(writer, 77, { characters: 300, configs: 5, personas: 2, memories: 0 });
    const prisma = await botPrisma(pool);
    const logger = pino({ level: 'silent' });
    const lib = createMemorySync<Declaration>({ databaseUrl: db.url, config: BOT_CONFIG, summaryIntervalMs: 0, logger });
    const viaPrisma = createMemorySync<Declaration>({ databaseUrl: db.url, config: BOT_CONFIG, summaryIntervalMs: 0, logger });
    await Promise.all([lib.start(), viaPrisma.start()]);
    const xprisma = (await botPrisma(pool)).$extends(memorySyncExtension(viaPrisma));

    // Zipf(1) over the characters: a few are read all the time, most now and then.
    const r = rng(5);
    const n = world.characters.length;
    const weights = Array.from({ length: n }, (_, i) => 1 / (i + 1));
    const total = weights.reduce((a, b) => a + b, 0);
    const cdf = weights.map(
      (
        (acc) => (w: number) =>
          (acc += w / total)
      )(0),
    );
    const pick = () => {
      const u = r.next();
      let lo = 0;
      let hi = n - 1;
      while (lo < hi) {
        const mid = (lo + hi) >> 1;
        if (cdf[mid]! < u) lo = mid + 1;
        else hi = mid;
      }
      return world.characters[lo]!;
    };
    const sequence = Array.from({ length: reads }, pick);
    const write = async (i: number) => {
      const which = i % 3;
      if (which === 0) await writer.query(`UPDATE characters SET display_name = $2 WHERE id = $1`, [pick(), `n${i}`]);
      else if (which === 1) await writer.query(`UPDATE model_configs SET label = $2 WHERE id = $1`, [world.configs[i % world.configs.length], `L${i}`]);
      else await writer.query(`INSERT INTO character_nicknames (id, name, character_id) VALUES ($1, $2, $3)`, [randomUUID(), `nick${i}`, pick()]);
    };

    const methods: Record<string, (id: string) => Promise<unknown>> = {
      library: (id) => lib.entity('character').get({ id }),
      extension: (id) => xprisma.character.findUnique({ where: { id }, ...INCLUDE }),
      prisma: (id) => prisma.character.findUnique({ where: { id }, ...INCLUDE }),
    };
    const times: Record<string, number[]> = { library: [], extension: [], prisma: [] };
    const statsBefore = lib.stats().entities.character!;
    log(`entities: ${reads.toLocaleString('en')} reads each, a write every 100…`);
    // Runs of 500 reads per method, rotated, on the same ids, the writes shared.
    const run = 500;
    for (let start = 0, turn = 0; start < reads; start += run, turn++) {
      const names = Object.keys(methods);
      for (let m = 0; m < names.length; m++) {
        const name = names[(m + turn) % names.length]!;
        for (let i = start; i < Math.min(reads, start + run); i++) {
          if (m === 0 && i % 100 === 99) await write(i);
          const t = now();
          const v = await methods[name]!(sequence[i]!);
          times[name]!.push(now() - t);
          if (!v) throw new Error(`${name}: character ${sequence[i]} not found`);
        }
      }
    }
    const s = lib.stats().entities.character!;
    const hits = s.hits - statsBefore.hits;
    const misses = s.misses - statsBefore.misses;
    const prismaP50 = pct(times.prisma!, 50);
    figures.push({
      figure: 'entity hit rate, character (4 relations, one to-many), Zipf reads, a plain-SQL write every 100',
      unit: '%',
      value: round((100 * hits) / (hits + misses), 1),
      goal: 'reported',
      met: true,
      detail: { hits, misses, evictions: s.invalidated - statsBefore.invalidated, reads },
    });
    for (const [name, label] of [
      ['library', "memory.entity('character').get({ id })"],
      ['extension', 'prisma.character.findUnique with the declared include, through memorySyncExtension'],
    ] as const) {
      const p50 = pct(times[name]!, 50);
      figures.push({
        figure: `entity lookup p50, ${label}`,
        unit: 'ms',
        value: round(p50, 4),
        baseline: round(prismaP50, 3),
        baselineName: 'Prisma findUnique, same include, same database (p50)',
        goal: 'faster than Prisma',
        met: p50 < prismaP50,
        detail: { p99: round(pct(times[name]!, 99), 3), prismaP99: round(pct(times.prisma!, 99), 3), speedup: round(prismaP50 / p50, 1) },
      });
    }
    await Promise.all([lib.close(), viaPrisma.close()]);
    await prisma.$disconnect();
    await xprisma.$disconnect();
  } finally {
    await writer.end().catch(() => {});
    await pool.end().catch(() => {});
    await db.drop();
  }
  return figures;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  benchEntities().then(
    (rows) => {
      if (process.argv.includes('--json')) process.stdout.write(`${JSON.stringify(rows)}\n`);
      else for (const r of rows) console.log(`${r.figure}: ${r.value} ${r.unit}   baseline ${r.baseline ?? '-'} (${r.baselineName ?? ''})   ${JSON.stringify(r.detail ?? {})}`);
      process.exit(0);
    },
    (err) => {
      console.error(err);
      process.exit(1);
    },
  );
}
