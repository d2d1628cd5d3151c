import type { Bus, BusConfig } from './bus.js';
import type { NatsBusOptions } from './nats.js';
import type { RedisBusOptions } from './redis.js';

/**
 * Engine options beyond the URL (limits, timeouts); each engine takes the
 * ones it knows and ignores the rest.
 */
export type BusEngineOptions = Omit<Partial<NatsBusOptions>, 'servers' | 'stream' | 'user' | 'pass' | 'tls'> &
  Omit<Partial<RedisBusOptions>, 'host' | 'port' | 'db' | 'stream' | 'username' | 'password' | 'tls'>;

/** An engine for a parsed URL (not yet connected); the engine module is loaded only when used. */
export async function createBus(config: BusConfig, options: BusEngineOptions = {}): Promise<Bus> {
  if (config.kind === 'nats') {
    const { NatsBus } = await import('./nats.js');
    return new NatsBus({ ...options, ...config });
  }
  const { RedisBus } = await import('./redis.js');
  return new RedisBus({ ...options, ...config });
}
