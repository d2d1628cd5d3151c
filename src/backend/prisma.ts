import { PrismaPg } from '@prisma/adapter-pg';
import type pg from 'pg';
import { PrismaClient } from '../generated/prisma/client.js';

export type { Personality, LlmConfig } from '../generated/prisma/client.js';
export { PrismaClient };

/** Prisma over the shared pg pool: Prisma 7 sizes its pool from pg.Pool, not the schema. */
export function createPrisma(pool: pg.Pool): PrismaClient {
  return new PrismaClient({ adapter: new PrismaPg(pool) });
}
