import type pg from 'pg';

/**
 * A query with its own client-side timeout instead of the pool's
 * (`query_timeout` per query is honoured by pg but missing from its types).
 */
export function timedQuery(text: string, values: unknown[], timeoutMs: number): pg.QueryConfig {
  const config: pg.QueryConfig & { query_timeout: number } = { text, values, query_timeout: timeoutMs };
  return config;
}
