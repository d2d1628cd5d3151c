/**
 * Stable error codes. Callers branch on `err.code`, never on the message.
 * `HTTP_STATUS` is the one mapping from code to HTTP status, used by the
 * sidecar to answer and by the remote client to rebuild the error.
 */
export type ErrorCode =
  | 'validation'
  | 'not_found'
  | 'conflict'
  | 'unavailable'
  | 'query'
  | 'config'
  | 'permanent'
  | 'not_migrated'
  | 'unauthorized'
  | 'forbidden'
  | 'no_route'
  | 'internal';

export const HTTP_STATUS: Readonly<Record<ErrorCode, number>> = {
  validation: 400,
  not_found: 404,
  conflict: 409,
  unavailable: 503,
  query: 500,
  config: 500,
  permanent: 503,
  not_migrated: 503,
  unauthorized: 401,
  forbidden: 403,
  no_route: 404,
  internal: 500,
};

/** Base of every error this package throws on purpose. */
export class MemorySyncError extends Error {
  override readonly name: string = 'MemorySyncError';
  readonly code: ErrorCode = 'internal';
}

/**
 * Input rejected before any database round trip. `field` names the offending
 * input ("embedding[3]", "limit"); `reason` says what is wrong with it; the
 * message is "<field>: <reason>".
 */
export class ValidationError extends MemorySyncError {
  override readonly name = 'ValidationError';
  override readonly code = 'validation';
  constructor(
    readonly field: string,
    readonly reason: string,
  ) {
    super(`${field}: ${reason}`);
  }
}

/** The database (or the sidecar) could not be reached after every retry: try again later. */
export class DatabaseUnavailableError extends MemorySyncError {
  override readonly name = 'DatabaseUnavailableError';
  override readonly code = 'unavailable';
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
  }
}

/** A query failed for a reason other than connectivity (constraint, syntax, ...). `sqlState` is the SQLSTATE when known. */
export class QueryError extends MemorySyncError {
  override readonly name = 'QueryError';
  override readonly code = 'query';
  constructor(
    message: string,
    readonly sqlState: string | undefined,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** A referenced row does not exist (e.g. storing a memory for an unknown personality). */
export class NotFoundError extends MemorySyncError {
  override readonly name = 'NotFoundError';
  override readonly code = 'not_found';
}

/** A write collides with an existing row on a unique field (`field` names it, e.g. "name"). */
export class ConflictError extends MemorySyncError {
  override readonly name = 'ConflictError';
  override readonly code = 'conflict';
  constructor(
    readonly field: string,
    message: string,
  ) {
    super(message);
  }
}

/** Configuration value rejected at start-up. `variable` names the option or environment variable. */
export class ConfigError extends MemorySyncError {
  override readonly name = 'ConfigError';
  override readonly code = 'config';
  constructor(
    readonly variable: string,
    readonly reason: string,
  ) {
    super(`${variable}: ${reason}`);
  }
}

/**
 * Retrying cannot help: wrong database name, bad credentials, missing
 * privileges. `sqlState` is the server's SQLSTATE; the message says what to fix.
 */
export class PermanentError extends MemorySyncError {
  override readonly name: string = 'PermanentError';
  override readonly code: ErrorCode = 'permanent';
  constructor(
    message: string,
    readonly sqlState: string | undefined,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** The database is reachable but memory-sync's tables or triggers are missing. */
export class NotMigratedError extends PermanentError {
  override readonly name = 'NotMigratedError';
  override readonly code = 'not_migrated';
}

/** The sidecar was asked without a token, or with one it does not know (HTTP 401): fix MEMORY_SYNC_TOKEN or the client's `token`. */
export class UnauthorizedError extends MemorySyncError {
  override readonly name = 'UnauthorizedError';
  override readonly code = 'unauthorized';
}

/** The token is valid but does not allow this (HTTP 403): a read token (MEMORY_SYNC_READ_TOKEN) on a write. */
export class ForbiddenError extends MemorySyncError {
  override readonly name = 'ForbiddenError';
  override readonly code = 'forbidden';
}

/** Rebuilds the error class from a code, for the remote client. */
export function errorFromCode(code: string | undefined, message: string, extra: { field?: string; sqlState?: string } = {}): MemorySyncError {
  switch (code) {
    case 'validation': {
      const field = extra.field ?? 'input';
      return new ValidationError(field, message.startsWith(`${field}: `) ? message.slice(field.length + 2) : message);
    }
    case 'not_found':
      return new NotFoundError(message);
    case 'conflict':
      return new ConflictError(extra.field ?? 'input', message);
    case 'unavailable':
      return new DatabaseUnavailableError(message);
    case 'query':
      return new QueryError(message, extra.sqlState);
    case 'permanent':
      return new PermanentError(message, extra.sqlState);
    case 'not_migrated':
      return new NotMigratedError(message, extra.sqlState);
    case 'unauthorized':
      return new UnauthorizedError(message);
    case 'forbidden':
      return new ForbiddenError(message);
    default:
      return new MemorySyncError(message);
  }
}
