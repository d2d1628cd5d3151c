import pRetry from 'p-retry';
import { DatabaseUnavailableError, MemorySyncError, NotMigratedError, PermanentError, QueryError } from '../contract/errors.js';

/*
 * One place that reads database errors, whoever wrapped them:
 * - pg: DatabaseError with `.code` (the SQLSTATE) and `.severity`; socket
 *   errors with Node's `.code` (ECONNREFUSED, ENOTFOUND, ...).
 * - @prisma/adapter-pg 7: DriverAdapterError whose `.cause` is
 *   `{ kind, originalCode?, originalMessage?, host?, port? }`; socket errors
 *   lose their Node code and become kind DatabaseNotReachable /
 *   ConnectionClosed / SocketTimeout.
 * - Prisma client 7: PrismaClientKnownRequestError with a P-code (57P03 is
 *   P2039, 53300 P2037, 28P01 P1000, ...), the DriverAdapterError in
 *   `meta.driverAdapterError`, and for raw queries "Code: `57P03`" in the
 *   message. Errors the adapter does not recognise ("Connection terminated
 *   unexpectedly", "Query read timeout") pass through as plain Errors.
 */

// PostgreSQL classes are two digits, or F0, HV, P0, XX. The shape keeps
// Node's EPIPE and Prisma's P2039 out.
const SQLSTATE = /^(?:[0-9][0-9A-Z]|F0|HV|P0|XX)[0-9A-Z]{3}$/;

const TRANSIENT_SQLSTATES = new Set([
  '57P01', // admin_shutdown: pg_terminate_backend, fast shutdown
  '57P02', // crash_shutdown
  '57P03', // cannot_connect_now: starting up or shutting down
  '57P05', // idle_session_timeout
  '53300', // too_many_connections
]);
const TRANSIENT_NODE_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'EHOSTUNREACH', 'ENETUNREACH', 'EAI_AGAIN']);
// Prisma codes for connectivity: unreachable, connect timed out, socket timed
// out, connection closed, pool timeout, too many connections.
const TRANSIENT_PRISMA_CODES = new Set(['P1001', 'P1002', 'P1008', 'P1017', 'P2024', 'P2037']);
const TRANSIENT_ADAPTER_KINDS = new Set(['DatabaseNotReachable', 'ConnectionClosed', 'SocketTimeout', 'TooManyConnections']);
// "Query read timeout": pg's query_timeout fired, usually a half-open socket.
const TRANSIENT_MESSAGES =
  /Query read timeout|Connection terminated|connection timeout|timeout exceeded when trying to connect|Client has encountered a connection error|terminating connection|ECONNREFUSED|ECONNRESET|server closed the connection/i;

type Node = Record<string, unknown>;

const isObject = (v: unknown): v is Node => typeof v === 'object' && v !== null;
const isPrismaError = (e: Node): boolean =>
  typeof e.clientVersion === 'string' || (typeof e.name === 'string' && e.name.startsWith('PrismaClient'));
const isAdapterError = (e: Node): boolean => e.name === 'DriverAdapterError' && isObject(e.cause);

/** Every error reachable from `err` (causes, Prisma's driverAdapterError, AggregateError members), outermost first. */
function chain(err: unknown): Node[] {
  const out: Node[] = [];
  const queue: unknown[] = [err];
  while (queue.length && out.length < 16) {
    const e = queue.shift();
    if (!isObject(e) || out.includes(e)) continue;
    out.push(e);
    if (isObject(e.meta)) queue.push(e.meta.driverAdapterError);
    queue.push(e.cause);
    if (Array.isArray(e.errors)) queue.push(...(e.errors as unknown[]));
  }
  return out;
}

interface ServerError {
  sqlState: string;
  /** The server's own message, without Prisma's invocation frame. */
  message: string;
}

function serverError(err: unknown): ServerError | undefined {
  for (const e of chain(err)) {
    if (e instanceof MemorySyncError) {
      const s = (e as { sqlState?: unknown }).sqlState;
      if (typeof s === 'string') return { sqlState: s, message: e.message };
      continue;
    }
    if (isAdapterError(e)) {
      const c = e.cause as Node;
      if (typeof c.originalCode === 'string' && SQLSTATE.test(c.originalCode)) {
        return { sqlState: c.originalCode, message: typeof c.originalMessage === 'string' ? c.originalMessage : String(e.message) };
      }
      continue;
    }
    if (isPrismaError(e)) {
      // Raw-query wrappers (P2010, P2039) print "Code: `57P03`. Message: `...`".
      const m = typeof e.message === 'string' ? /Code: `([0-9A-Z]{5})`\. Message: `(.*)`/s.exec(e.message) : null;
      if (m && SQLSTATE.test(m[1]!)) return { sqlState: m[1]!, message: m[2]! };
      continue;
    }
    if (typeof e.code === 'string' && SQLSTATE.test(e.code)) {
      return { sqlState: e.code, message: typeof e.message === 'string' ? e.message : e.code };
    }
  }
  return undefined;
}

/**
 * The SQLSTATE behind `err`, through pg, the Prisma driver adapter and Prisma
 * client wrappers (P2039 -> "57P03", P2037 -> "53300", ...), or undefined
 * when the server sent none (socket errors, timeouts, client-side errors).
 */
export function sqlStateOf(err: unknown): string | undefined {
  return serverError(err)?.sqlState;
}

/** The host name that did not resolve, when `err` is a DNS "not found". */
function unknownHost(err: unknown): string | undefined {
  const failure = dnsFailure(err);
  return failure?.code === 'ENOTFOUND' ? failure.host : undefined;
}

export interface DnsFailure {
  /** The name that did not resolve. */
  host: string;
  /** ENOTFOUND: the resolver says there is no such name; EAI_AGAIN: it could not answer. */
  code: 'ENOTFOUND' | 'EAI_AGAIN';
}

/**
 * The DNS failure behind `err`, through pg and the Prisma driver adapter, or
 * undefined. At start-up both codes are waited out for a while (a new
 * container's private DNS name may not resolve yet), then they are permanent:
 * see {@link dnsPermanentError}.
 */
export function dnsFailure(err: unknown): DnsFailure | undefined {
  for (const e of chain(err)) {
    if (e.code === 'ENOTFOUND' || e.code === 'EAI_AGAIN') {
      return { host: typeof e.hostname === 'string' ? e.hostname : 'the database host', code: e.code };
    }
    // The adapter keeps no Node code; ENOTFOUND is the only socket error it maps
    // with a host name and no port (refused TCP has both; unix sockets are paths).
    if (isAdapterError(e)) {
      const c = e.cause as Node;
      if (c.kind === 'DatabaseNotReachable' && typeof c.host === 'string' && !c.host.startsWith('/') && c.port === undefined) {
        return { host: c.host, code: 'ENOTFOUND' };
      }
    }
  }
  return undefined;
}

/** The error start() fails with once a DNS failure has outlasted its window (`startup.dnsRetryMs`). */
export function dnsPermanentError(failure: DnsFailure, waitedMs: number, cause: unknown): PermanentError {
  const waited = waitedMs > 0 ? ` (still, after ${Math.round(waitedMs / 1000)} s of retries)` : '';
  const what = failure.code === 'ENOTFOUND' ? 'not found' : 'did not resolve (EAI_AGAIN: the DNS server gave no answer)';
  return new PermanentError(`database host "${failure.host}" ${what}${waited}: fix the host in DATABASE_URL`, undefined, { cause });
}

/**
 * The typed error for failures that retrying cannot fix (wrong database
 * name, credentials, privileges, unknown host, schema not migrated), with a
 * message saying what is wrong and what to do; undefined for anything else.
 */
export function toPermanent(err: unknown): PermanentError | undefined {
  if (err instanceof PermanentError) return err;
  if (err instanceof MemorySyncError) return undefined;
  const server = serverError(err);
  const cause = { cause: err };
  switch (server?.sqlState) {
    case '3D000':
      return new PermanentError(`${server.message}: create it or fix DATABASE_URL`, server.sqlState, cause);
    case '28P01':
      return new PermanentError(`${server.message}: fix the password in DATABASE_URL`, server.sqlState, cause);
    case '28000':
      return new PermanentError(
        `${server.message}: fix the user in DATABASE_URL, or let it log in (ALTER ROLE ... LOGIN, a pg_hba.conf entry)`,
        server.sqlState,
        cause,
      );
    case '42501':
      return new PermanentError(
        `${server.message}: grant the DATABASE_URL user CONNECT on the database and SELECT, INSERT, UPDATE, DELETE on memory-sync's tables, or connect as their owner`,
        server.sqlState,
        cause,
      );
    case '42P01':
      // memory-sync queries only the tables its declaration names (start() checked they exist): one gone is a schema to migrate.
      return new NotMigratedError(
        `${server.message}: the database is not migrated for the declaration; run \`memory-sync migrate\` (memory-sync's own schema, or MEMORY_SYNC_MIGRATE=true) or \`memory-sync adopt\` (yours)`,
        server.sqlState,
        cause,
      );
  }
  const host = unknownHost(err);
  if (host !== undefined) return new PermanentError(`database host "${host}" not found: fix the host in DATABASE_URL`, undefined, cause);
  // pg's SCRAM client when the server wants a password and the URL has none.
  if (chain(err).some((e) => typeof e.message === 'string' && e.message.includes('client password must be a string'))) {
    return new PermanentError('the server asks for a password and DATABASE_URL has none: add it', '28P01', cause);
  }
  return undefined;
}

/** True for errors where the same call may succeed once the connection is back; never for toPermanent() ones. */
export function isTransient(err: unknown): boolean {
  if (err instanceof MemorySyncError) return err instanceof DatabaseUnavailableError;
  if (toPermanent(err)) return false;
  const state = sqlStateOf(err);
  if (state !== undefined && (TRANSIENT_SQLSTATES.has(state) || state.startsWith('08'))) return true;
  for (const e of chain(err)) {
    if (typeof e.code === 'string') {
      if (TRANSIENT_NODE_CODES.has(e.code)) return true;
      if (isPrismaError(e) && TRANSIENT_PRISMA_CODES.has(e.code)) return true;
    }
    if (isAdapterError(e) && TRANSIENT_ADAPTER_KINDS.has(String((e.cause as Node).kind))) return true;
    // A Prisma request error's message quotes the caller's source: its codes above decide instead.
    const quotesSource = isPrismaError(e) && typeof e.code === 'string';
    if (!quotesSource && typeof e.message === 'string' && TRANSIENT_MESSAGES.test(e.message)) return true;
  }
  return false;
}

export interface RetryOptions {
  /**
   * Retries after the first attempt, for transient errors only.
   * @defaultValue 5, about 3 s of backoff in all: rides out a restart or failover without stalling callers long.
   */
  retries: number;
  /**
   * First backoff delay, doubled per retry, jittered ×1–2.
   * @defaultValue 50 ms: a dropped pooled connection is usually replaced at once.
   */
  minTimeoutMs: number;
  /**
   * Longest backoff delay.
   * @defaultValue 2000 ms: keeps later attempts close enough to notice recovery.
   */
  maxTimeoutMs: number;
  /** Called before each real retry (never for errors that fail at once), e.g. to log it. */
  onRetry?: (err: unknown, attempt: number) => void;
  /** Aborting stops waiting: the call fails with DatabaseUnavailableError. */
  signal?: AbortSignal;
}

export const DEFAULT_RETRY: RetryOptions = { retries: 5, minTimeoutMs: 50, maxTimeoutMs: 2000 };

/**
 * Runs `fn`, retrying transient connection errors with jittered backoff.
 * Permanent errors (toPermanent) fail at once as PermanentError/NotMigratedError;
 * other errors at once as QueryError (with the SQLSTATE); transient ones that
 * outlast the retries as DatabaseUnavailableError.
 */
export async function withRetry<T>(fn: () => Promise<T>, options: RetryOptions = DEFAULT_RETRY): Promise<T> {
  try {
    return await pRetry(fn, {
      // p-retry calls onFailedAttempt for every failure, retried or not, so
      // retries are reported from here, where the decision is made.
      shouldRetry: ({ error, attemptNumber }) => {
        if (!isTransient(error)) return false;
        options.onRetry?.(error, attemptNumber);
        return true;
      },
      retries: options.retries,
      minTimeout: options.minTimeoutMs,
      maxTimeout: options.maxTimeoutMs,
      randomize: true,
      signal: options.signal,
    });
  } catch (err) {
    throw toTypedError(err, options);
  }
}

function toTypedError(err: unknown, options: RetryOptions): MemorySyncError {
  if (err instanceof MemorySyncError) return err;
  const permanent = toPermanent(err);
  if (permanent) return permanent;
  const server = serverError(err);
  const message = server?.message ?? (err instanceof Error ? err.message : String(err));
  if (options.signal?.aborted) return new DatabaseUnavailableError('stopped retrying: shutting down', { cause: err });
  if (isTransient(err)) {
    return new DatabaseUnavailableError(`database unavailable after ${options.retries + 1} attempts: ${message}`, { cause: err });
  }
  return new QueryError(message, server?.sqlState, { cause: err });
}
