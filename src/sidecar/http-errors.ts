import type { FastifyError } from 'fastify';
import { ConflictError, HTTP_STATUS, MemorySyncError, PermanentError, QueryError, ValidationError } from '../contract/errors.js';
import type { ErrorBody } from '../contract/wire.js';

export interface HttpError {
  status: number;
  body: ErrorBody;
}

/**
 * Maps what a handler or fastify throws to a status and JSON body, through
 * the one code → status table (HTTP_STATUS). Input is validated by the same
 * functions as in-process, so a bad field reads the same on both paths.
 */
export function toHttpError(err: unknown): HttpError {
  if (err instanceof MemorySyncError) {
    const body: ErrorBody = { error: err.message, code: err.code };
    if (err instanceof ValidationError || err instanceof ConflictError) body.field = err.field;
    if ((err instanceof QueryError || err instanceof PermanentError) && err.sqlState) body.sqlState = err.sqlState;
    return { status: HTTP_STATUS[err.code], body };
  }
  // Fastify's own client errors: malformed JSON, empty body, too large, wrong content type.
  const fe = err as Partial<FastifyError>;
  const status = typeof fe.statusCode === 'number' ? fe.statusCode : 500;
  if (status >= 400 && status < 500) {
    return { status, body: { error: `body: ${fe.message ?? 'is invalid'}`, code: 'validation', field: 'body' } };
  }
  return { status: 500, body: { error: 'internal error', code: 'internal' } };
}
