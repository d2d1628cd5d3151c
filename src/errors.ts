/** Base of every error this package throws on purpose. */
export class MemorySyncError extends Error {}

/** Input rejected before any database round trip. `field` names the offending input. */
export class ValidationError extends MemorySyncError {
  override readonly name = 'ValidationError';
  constructor(
    readonly field: string,
    message: string,
  ) {
    super(`${field}: ${message}`);
  }
}

/** The database could not be reached after every retry. */
export class DatabaseUnavailableError extends MemorySyncError {
  override readonly name = 'DatabaseUnavailableError';
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
  }
}

/** A query failed for a reason other than connectivity (constraint, syntax, ...). */
export class QueryError extends MemorySyncError {
  override readonly name = 'QueryError';
  constructor(
    message: string,
    readonly code: string | undefined,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** A referenced row does not exist (e.g. storing a memory for an unknown personality). */
export class NotFoundError extends MemorySyncError {
  override readonly name = 'NotFoundError';
}

/** Configuration value rejected at start-up. `variable` names the environment variable. */
export class ConfigError extends MemorySyncError {
  override readonly name = 'ConfigError';
  constructor(
    readonly variable: string,
    message: string,
  ) {
    super(`${variable}: ${message}`);
  }
}
