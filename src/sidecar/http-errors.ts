import type { FastifyError, FastifySchemaValidationError } from 'fastify';
import { DatabaseUnavailableError, NotFoundError, QueryError, ValidationError } from '../errors.js';
import type { ErrorBody } from './protocol.js';

export interface HttpError {
  status: number;
  body: ErrorBody;
}

/** "/embedding/3" -> "embedding[3]", "/metadata/a" -> "metadata.a": the engine's field spelling. */
function fieldName(v: FastifySchemaValidationError, context: string): string {
  const parts = v.instancePath.split('/').slice(1);
  if (v.keyword === 'required' && typeof v.params.missingProperty === 'string') parts.push(v.params.missingProperty);
  let out = '';
  for (const p of parts) out += /^\d+$/.test(p) ? `[${p}]` : out ? `.${p}` : p;
  return out || context;
}

function schemaMessage(v: FastifySchemaValidationError): string {
  if (v.keyword === 'required') return 'is required';
  if (v.keyword === 'pattern') return 'must be a UUID'; // the only patterns in our schemas
  return v.message ?? 'is invalid';
}

const validation = (field: string, message: string, status = 400): HttpError => ({
  status,
  body: { error: `${field}: ${message}`, code: 'validation', field },
});

/**
 * Maps what a handler or fastify throws to a status and JSON body. JSON-schema
 * failures and the engine's ValidationError look the same to the caller.
 */
export function toHttpError(err: unknown): HttpError {
  const fe = err as Partial<FastifyError>;
  if (fe.validation?.[0]) {
    const v = fe.validation[0];
    return validation(fieldName(v, fe.validationContext ?? 'body'), schemaMessage(v));
  }
  if (err instanceof ValidationError) return validation(err.field, err.message.slice(err.field.length + 2));
  if (err instanceof NotFoundError) return { status: 404, body: { error: err.message, code: 'not_found' } };
  if (err instanceof DatabaseUnavailableError) return { status: 503, body: { error: err.message, code: 'unavailable' } };
  if (err instanceof QueryError) {
    const body: ErrorBody = { error: err.message, code: 'query' };
    if (err.code) body.sqlState = err.code;
    return { status: 500, body };
  }
  // Fastify's own client errors: malformed JSON, empty body, too large, wrong content type.
  const status = typeof fe.statusCode === 'number' ? fe.statusCode : 500;
  if (status >= 400 && status < 500) return validation('body', fe.message ?? 'is invalid', status);
  return { status: 500, body: { error: 'internal error', code: 'internal' } };
}
