import { createRequire } from 'node:module';
import pino, { type DestinationStream, type Logger } from 'pino';
import type { SidecarConfig } from '../config.js';
import { sqlStateOf } from '../backend/retry.js';
import { ConfigError } from '../contract/errors.js';

/**
 * The `err` serializer: an Error is logged with type, message, stack (causes
 * appended), its own fields (`code`, pg's `detail`, ...) and the SQLSTATE
 * found behind Prisma wrappers. A value that is not an Error is logged as it
 * is, rather than dressed up as `{"type":"Object","stack":""}`.
 */
export function serializeErr(err: unknown): unknown {
  if (!(err instanceof Error)) return err;
  const out = pino.stdSerializers.errWithCause(err) as unknown as Record<string, unknown>;
  const sqlState = sqlStateOf(err);
  if (sqlState !== undefined && out.sqlState === undefined) out.sqlState = sqlState;
  return out;
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
 * Throws ConfigError (LOG_PRETTY) when pretty output is asked for and
 * pino-pretty is not installed.
 */
export function createLogger(config: Pick<SidecarConfig, 'logLevel' | 'logPretty'>, destination?: DestinationStream): Logger {
  const options = { name: 'memory-sync', level: config.logLevel, serializers: { err: serializeErr } };
  if (destination) return pino(options, destination);
  if (config.logPretty) {
    const pretty = loadPretty();
    return pino(options, pretty({ sync: true, singleLine: true, colorize: process.stdout.isTTY, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname,name' }));
  }
  return pino(options, pino.destination({ dest: 1, sync: true }));
}
