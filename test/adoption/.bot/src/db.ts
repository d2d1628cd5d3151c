// The bot's own database handles: one pg.Pool, and Prisma on the pg adapter over it.
import { PrismaPg } from '@prisma/adapter-pg';
import pg from 'pg';
import { PrismaClient } from '../generated/prisma/client.js';

export const APP = 'bot';

export function databaseUrl(): string {
  const url = process.env.DATABASE_URL;
  if (!url) throw new Error('DATABASE_URL is required');
  return url;
}

export function openDatabase(max: number): { pool: pg.Pool; prisma: PrismaClient } {
  const pool = new pg.Pool({ connectionString: databaseUrl(), max, application_name: APP });
  return { pool, prisma: new PrismaClient({ adapter: new PrismaPg(pool) }) };
}

/** Backends on this database by application_name (the asking connection is one of the bot's). */
export async function connectionsByApp(pool: pg.Pool): Promise<Record<string, number>> {
  const r = await pool.query<{ app: string; n: number }>(
    `SELECT application_name AS app, count(*)::int AS n FROM pg_stat_activity
      WHERE datname = current_database() AND backend_type = 'client backend' GROUP BY 1 ORDER BY 1`,
  );
  return Object.fromEntries(r.rows.map((row) => [row.app, row.n]));
}

/** Prints the run's observations as the last stdout line, for the test to check. */
export function report(observations: unknown): void {
  process.stdout.write(`${JSON.stringify(observations)}\n`);
}
