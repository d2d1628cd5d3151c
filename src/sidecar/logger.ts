import pino, { type DestinationStream, type Logger } from 'pino';
import pretty from 'pino-pretty';
import type { SidecarConfig } from '../config.js';

/**
 * JSON lines on stdout; pino-pretty in development. Both write synchronously
 * so the last lines before process.exit() are not lost.
 */
export function createLogger(config: Pick<SidecarConfig, 'logLevel' | 'logPretty'>, destination?: DestinationStream): Logger {
  const options = { name: 'memory-sync', level: config.logLevel };
  if (destination) return pino(options, destination);
  if (config.logPretty) {
    return pino(options, pretty({ sync: true, singleLine: true, colorize: process.stdout.isTTY, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname,name' }));
  }
  return pino(options, pino.destination({ dest: 1, sync: true }));
}
