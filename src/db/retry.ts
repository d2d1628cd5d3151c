import pRetry from 'p-retry';
import { DatabaseUnavailableError, MemorySyncError, QueryError } from '../errors.js';

const TRANSIENT_CODES = new Set([
  'ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'EHOSTUNREACH', 'ENETUNREACH', 'EAI_AGAIN',
  '57P01', // admin_shutdown (pg_terminate_backend, restart)
  '57P02', // crash_shutdown
  '57P03', // cannot_connect_now (starting up)
  '53300', // too_many_connections
  'P1001', 'P1002', 'P1017', 'P2024', // Prisma: unreachable, timed out, closed, pool timeout
]);
// "Query read timeout": pg's query_timeout fired, usually a half-open socket.
const TRANSIENT_MESSAGES = /Query read timeout|Connection terminated|connection timeout|timeout exceeded when trying to connect|Client has encountered a connection error|terminating connection|ECONNREFUSED|ECONNRESET|server closed the connection/i;

/** True for errors where the same call may succeed once the connection is back. */
export function isTransient(err: unknown): boolean {
  for (let e = err, depth = 0; e && depth < 6; depth++) {
    const o = e as { code?: unknown; message?: unknown; cause?: unknown; errno?: unknown };
    if (typeof o.code === 'string' && (TRANSIENT_CODES.has(o.code) || o.code.startsWith('08'))) return true;
    if (typeof o.message === 'string' && TRANSIENT_MESSAGES.test(o.message)) return true;
    // AggregateError from net when every address refuses.
    if (Array.isArray((o as { errors?: unknown[] }).errors) && (o as { errors: unknown[] }).errors.some(isTransient)) {
      return true;
    }
    e = o.cause;
  }
  return false;
}

export interface RetryOptions {
  retries: number;
  minTimeoutMs: number;
  maxTimeoutMs: number;
  onRetry?: (err: unknown, attempt: number) => void;
  signal?: AbortSignal;
}

export const DEFAULT_RETRY: RetryOptions = { retries: 5, minTimeoutMs: 50, maxTimeoutMs: 2000 };

function sqlState(err: unknown): string | undefined {
  for (let e = err, d = 0; e && d < 6; d++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string') return code;
    e = (e as { cause?: unknown }).cause;
  }
  return undefined;
}

/**
 * Runs `fn`, retrying transient connection errors with jittered backoff.
 * Anything else fails at once as QueryError; exhausted retries as DatabaseUnavailableError.
 */
export async function withRetry<T>(fn: () => Promise<T>, options: RetryOptions = DEFAULT_RETRY): Promise<T> {
  try {
    return await pRetry(fn, {
      shouldRetry: ({ error }) => isTransient(error),
      retries: options.retries,
      minTimeout: options.minTimeoutMs,
      maxTimeout: options.maxTimeoutMs,
      randomize: true,
      signal: options.signal,
      onFailedAttempt: ({ error, attemptNumber, retriesLeft }) => {
        if (retriesLeft > 0) options.onRetry?.(error, attemptNumber);
      },
    });
  } catch (err) {
    if (err instanceof MemorySyncError) throw err;
    if (options.signal?.aborted) {
      throw new DatabaseUnavailableError('stopped retrying: shutting down', { cause: err });
    }
    const message = err instanceof Error ? err.message : String(err);
    if (isTransient(err)) {
      throw new DatabaseUnavailableError(`database unavailable after ${options.retries + 1} attempts: ${message}`, {
        cause: err,
      });
    }
    throw new QueryError(message, sqlState(err), { cause: err });
  }
}
