import type { Queryable } from '../../../backend/queryable.js';
import { vectorLiteral } from '../../../store/collections.js';
import { KNOWN_ARITHMETIC, matchesPgvector, probeVectors, type PgvectorArithmetic } from './pgvector-distance.js';

/**
 * Which known float32 summation the server's pgvector uses for `<=>` at
 * this dimension (it depends on how vector.so was compiled and on the CPU):
 * the probe vectors' distances, asked once, tell the known orders apart.
 * null: none of them.
 */
export async function probeArithmetic(db: Pick<Queryable, 'query'>, dimension: number): Promise<PgvectorArithmetic | null> {
  const { rows, query } = probeVectors(dimension);
  const r = await db.query<{ d: number }>(`SELECT (r::vector <=> $1::vector) AS d FROM unnest($2::text[]) WITH ORDINALITY AS u(r, i) ORDER BY i`, [
    vectorLiteral(query),
    rows.map(vectorLiteral),
  ]);
  const distances = r.rows.map((x) => Number(x.d));
  return KNOWN_ARITHMETIC.find((a) => matchesPgvector(dimension, distances, a)) ?? null;
}
