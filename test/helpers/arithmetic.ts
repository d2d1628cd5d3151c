import type pg from 'pg';
import { KNOWN_ARITHMETIC, type PgvectorArithmetic } from '../../src/cache/hot/int8/pgvector-distance.js';
import { probeArithmetic } from '../../src/cache/hot/int8/probe.js';

/**
 * The known arithmetic the server's pgvector computes `<=>` with, found as
 * the client finds it (probe vectors). Throws when none matches: then the
 * installed vector.so was built some other way, and the tests that compare
 * similarity bits cannot run (scripts/install-pgvector.sh builds the
 * portable one).
 */
export async function serverArithmetic(sql: pg.ClientBase, dimension = 384): Promise<PgvectorArithmetic> {
  const found = await probeArithmetic(sql, dimension);
  if (!found) throw new Error(`the server's pgvector sums in none of the known orders (${KNOWN_ARITHMETIC.map((a) => a.name).join(', ')}); rebuild it with scripts/install-pgvector.sh`);
  return found;
}
