import type { z } from 'zod';
import { ConfigError, ValidationError } from '../contract/errors.js';

/** ["embedding", 3] -> "embedding[3]", ["metadata", "a"] -> "metadata.a", [] -> "body". */
export function fieldName(path: readonly PropertyKey[]): string {
  let out = '';
  for (const p of path) out += typeof p === 'number' ? `[${p}]` : out ? `.${String(p)}` : String(p);
  return out || 'body';
}

/**
 * Parses input with a zod schema; the first issue becomes a ValidationError
 * naming the field. The HTTP API and the in-process client both call this,
 * so the same bad input gets the same message on both paths.
 */
export function parseInput<S extends z.ZodType>(schema: S, input: unknown): z.output<S> {
  const result = schema.safeParse(input);
  if (result.success) return result.data;
  const issue = result.error.issues[0]!;
  // A check that reports a more precise field (embedding[9]) names it in params.
  const field = (issue as { params?: { field?: string } }).params?.field ?? fieldName(issue.path);
  throw new ValidationError(field, issue.message);
}

/**
 * Parses a component's options with a zod schema; the first issue becomes a
 * ConfigError naming `<prefix>.<key path>` (a programmer's or operator's
 * mistake, not a request's).
 */
export function parseOptions<S extends z.ZodType>(schema: S, input: unknown, prefix: string): z.output<S> {
  const result = schema.safeParse(input);
  if (result.success) return result.data;
  const issue = result.error.issues[0];
  throw new ConfigError(`${prefix}.${issue?.path.join('.') ?? 'options'}`, issue?.message ?? 'invalid');
}
