import { KNOWN_ARITHMETIC, matchesPgvector, probeVectors, type PgvectorArithmetic } from '../../src/cache/hot/int8/pgvector-distance.js';
import type pg from 'pg';

const literal = (v: Float32Array) => `[${Array.from(v).join(',')}]`;

/**
 * The known arithmetic the server's pgvector computes `<=>` with, found as
 * the client finds it (probe vectors). Throws when none matches: then the
 * installed vector.so was built some other way, and the tests that compare
 * similarity bits cannot run (scripts/install-pgvector.sh builds the
 * portable one).
 */
export async function serverArithmetic(sql: pg.ClientBase, dimension = 384): Promise<PgvectorArithmetic> {
  const { rows, query } = probeVectors(dimension);
  const r = await sql.query<{ d: number }>(
    `SELECT (x::vector <=> $1::vector) AS d FROM unnest($2::text[]) WITH ORDINALITY AS t(x, o) ORDER BY o`,
    [literal(query), rows.map(literal)],
  );
  const distances = r.rows.map((x) => Number(x.d));
  const found = KNOWN_ARITHMETIC.find((a) => matchesPgvector(dimension, distances, a));
  if (!found) throw new Error(`the server's pgvector sums in none of the known orders (${KNOWN_ARITHMETIC.map((a) => a.name).join(', ')}); rebuild it with scripts/install-pgvector.sh`);
  return found;
}
