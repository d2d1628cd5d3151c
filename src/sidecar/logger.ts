import { createRequire } from 'node:module';
import pino, { type DestinationStream, type Logger } from 'pino';
import type { SidecarConfig } from '../config.js';
import { sqlStateOf } from '../backend/retry.js';
import { ConfigError } from '../contract/errors.js';

/**
 * Fields of an error that are safe to log: what failed and where, never the
 * data. pg errors also carry `detail` ("Failing row contains (…)", "Key
 * (name)=(…)"), `where` (parameter values), `internalQuery` and `hint`;
 * Prisma errors carry `meta` and the call's arguments; URL errors `input`.
 * Everything not listed here is left out.
 */
const SAFE_ERROR_FIELDS = new Set([
  'type', 'message', 'stack', 'code', 'sqlState', 'severity', 'schema', 'table', 'column', 'constraint', 'dataType', 'routine',
  'field', 'variable', 'reason', 'errno', 'syscall', 'address', 'port', 'hostname', 'kind', 'statusCode',
]);

/**
 * Values a server message may quote back: `invalid input syntax for type
 * uuid: "<the input>"` (SQLSTATE class 22, data exceptions). Prisma messages
 * quote the call's arguments above their last line, which is the error.
 */
function safeMessage(err: Record<string, unknown>, message: string, sqlState: string | undefined): string {
  let m = message;
  if (typeof err.clientVersion === 'string') m = m.trim().split('\n').filter((l) => l.trim() !== '').at(-1)?.trim() ?? '';
  if (sqlState?.startsWith('22')) m = m.replace(/: ".*$/s, ': [REDACTED]');
  return m;
}

function scrubError(err: Error, depth: number): Record<string, unknown> {
  const raw = err as unknown as Record<string, unknown>;
  const sqlState = sqlStateOf(err);
  const out: Record<string, unknown> = {};
  const full = pino.stdSerializers.errWithCause(err) as unknown as Record<string, unknown>;
  for (const [key, value] of Object.entries(full)) {
    if (SAFE_ERROR_FIELDS.has(key) && (value === null || typeof value !== 'object')) out[key] = value;
  }
  const message = safeMessage(raw, err.message, sqlState);
  out.message = message;
  if (typeof err.stack === 'string') out.stack = message === err.message ? err.stack : err.stack.replace(err.message, message);
  if (sqlState !== undefined && out.sqlState === undefined) out.sqlState = sqlState;
  if (depth < 8) {
    if (err.cause instanceof Error) out.cause = scrubError(err.cause, depth + 1);
    if (Array.isArray(raw.errors)) out.aggregateErrors = raw.errors.filter((e): e is Error => e instanceof Error).map((e) => scrubError(e, depth + 1));
  }
  return out;
}

/**
 * The `err` serializer: an Error is logged with type, message, stack, its
 * causes, the SQLSTATE found behind Prisma wrappers, and only the fields in
 * SAFE_ERROR_FIELDS (no row contents, parameters or query text). A value
 * that is not an Error is logged as it is, rather than dressed up as
 * `{"type":"Object","stack":""}`.
 */
export function serializeErr(err: unknown): unknown {
  if (!(err instanceof Error)) return err;
  return scrubError(err, 0);
}

const CENSOR = '[REDACTED]';

/**
 * Paths pino blanks in every line, whoever logs them: credentials, and what
 * users said (memory content and metadata, embeddings, system prompts,
 * request bodies). A backstop: nothing logs them on purpose.
 */
export const REDACT_PATHS = [
  'authorization', 'headers.authorization', 'req.headers.authorization', 'req.headers.cookie', '*.authorization',
  'token', '*.token', 'password', '*.password', 'databaseUrl', '*.databaseUrl', 'connectionString', '*.connectionString',
  'content', '*.content', 'systemPrompt', '*.systemPrompt', 'embedding', '*.embedding', 'metadata', '*.metadata',
  'body', '*.body', 'values', '*.values', 'parameters', '*.parameters',
];

/** `url` with its password (user info or `?password=`) replaced, for a log line. */
export function redactUrl(url: string | undefined): string | undefined {
  if (url === undefined) return undefined;
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    if (u.searchParams.has('password')) u.searchParams.set('password', '***');
    return u.toString();
  } catch {
    return CENSOR;
  }
}

/** Shorter secrets would match ordinary log text; they are left to REDACT_PATHS and the serializer. */
const MIN_CENSORED_LENGTH = 6;

type SecretSource = Partial<Pick<SidecarConfig, 'databaseUrl' | 'auth' | 'engine'>>;

/** The configured secrets: tokens and the passwords of every URL (database, LISTEN, bus). */
export function secretsOf(config: SecretSource): string[] {
  const out = new Set<string>();
  const add = (s: string | undefined) => {
    if (s === undefined || s.length < MIN_CENSORED_LENGTH) return;
    out.add(s);
    out.add(encodeURIComponent(s));
    out.add(JSON.stringify(s).slice(1, -1)); // as it appears inside a JSON string
  };
  add(config.auth?.token);
  add(config.auth?.readToken);
  for (const url of [config.databaseUrl, config.engine?.databaseUrl, config.engine?.listener.databaseUrl, config.engine?.bus.url]) {
    if (url === undefined) continue;
    try {
      const u = new URL(url);
      for (const p of [u.password, u.searchParams.get('password') ?? '']) {
        if (!p) continue;
        add(p);
        try {
          add(decodeURIComponent(p));
        } catch {
          // not percent-encoded
        }
      }
    } catch {
      // validated elsewhere
    }
  }
  return [...out].filter((s) => s.length >= MIN_CENSORED_LENGTH).sort((a, b) => b.length - a.length);
}

/**
 * Wraps the destination so that a configured secret (a token, a URL's
 * password) never reaches the output, whatever text carried it: a driver's
 * message, a URL in an error, a value logged by mistake.
 */
function censoring(destination: DestinationStream, secrets: readonly string[]): DestinationStream {
  if (secrets.length === 0) return destination;
  const scrub = (line: string) => {
    let out = line;
    for (const s of secrets) if (out.includes(s)) out = out.split(s).join(CENSOR);
    return out;
  };
  const d = destination as DestinationStream & { flushSync?: () => void; flush?: (cb?: (err?: Error) => void) => void; end?: () => void };
  return {
    write: (msg: string) => d.write(scrub(msg)),
    ...(d.flushSync ? { flushSync: () => d.flushSync!() } : {}),
    ...(d.flush ? { flush: (cb?: (err?: Error) => void) => d.flush!(cb) } : {}),
    ...(d.end ? { end: () => d.end!() } : {}),
  } as DestinationStream;
}

/** The start-up `config` line: what an operator needs to check the setup, secrets replaced or reduced to "set". */
export function configSummary(config: SidecarConfig): Record<string, unknown> {
  return {
    host: config.host,
    port: config.port,
    database: config.databaseUrl ? redactUrl(config.databaseUrl) : `embedded (${config.dataDir})`,
    listenDatabase: redactUrl(config.engine.listener.databaseUrl),
    bus: redactUrl(config.engine.bus.url),
    migrate: config.migrate,
    logLevel: config.logLevel,
    access: {
      fullToken: config.auth.token !== undefined,
      readToken: config.auth.readToken !== undefined,
      metricsOpen: config.auth.metricsOpen || config.auth.token === undefined,
      insecure: config.auth.insecure,
    },
  };
}

type PrettyFactory = (options: Record<string, unknown>) => DestinationStream;

/** pino-pretty is optional: loaded only when asked for, so production installs can leave it out. */
function loadPretty(): PrettyFactory {
  try {
    // require() rather than import(): createLogger stays synchronous.
    const mod = createRequire(import.meta.url)('pino-pretty') as PrettyFactory | { default: PrettyFactory };
    return typeof mod === 'function' ? mod : mod.default;
  } catch (err) {
    if ((err as { code?: unknown }).code === 'MODULE_NOT_FOUND') {
      throw new ConfigError('LOG_PRETTY', 'needs the optional package pino-pretty: `npm install pino-pretty`, or unset LOG_PRETTY');
    }
    throw err;
  }
}

/**
 * JSON lines on stdout; pino-pretty when `logPretty` is set. Both write
 * synchronously so the last lines before process.exit() are not lost.
 * Errors go through serializeErr, REDACT_PATHS are blanked, and the
 * configured secrets (secretsOf) are censored from every line.
 * Throws ConfigError (LOG_PRETTY) when pretty output is asked for and
 * pino-pretty is not installed.
 */
export function createLogger(config: Pick<SidecarConfig, 'logLevel' | 'logPretty'> & SecretSource, destination?: DestinationStream): Logger {
  const options = {
    name: 'memory-sync',
    level: config.logLevel,
    serializers: { err: serializeErr, error: serializeErr },
    redact: { paths: REDACT_PATHS, censor: CENSOR },
  };
  const secrets = secretsOf(config);
  if (destination) return pino(options, censoring(destination, secrets));
  if (config.logPretty) {
    const pretty = loadPretty();
    const stream = pretty({ sync: true, singleLine: true, colorize: process.stdout.isTTY, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname,name' });
    return pino(options, censoring(stream, secrets));
  }
  return pino(options, censoring(pino.destination({ dest: 1, sync: true }), secrets));
}
