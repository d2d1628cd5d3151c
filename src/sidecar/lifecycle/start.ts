import type { Logger } from 'pino';
import type { SidecarConfig } from '../../config.js';
import { createLogger } from '../logger.js';
import { Sidecar } from './sidecar.js';

const SIGNALS = ['SIGTERM', 'SIGINT'] as const;

/**
 * `memory-sync start`: runs until SIGTERM or SIGINT, then shuts down
 * gracefully and resolves (the CLI then exits 0). A second signal, or a
 * shutdown still running after shutdownTimeoutMs, exits 1 at once.
 * Start-up failures (migration, port in use) reject after cleaning up.
 */
export async function runSidecar(config: SidecarConfig, logger: Logger = createLogger(config)): Promise<void> {
  const sidecar = new Sidecar(config, logger);
  let onSignal: (signal: NodeJS.Signals) => void = () => {};
  const signalled = new Promise<string>((resolve) => (onSignal = resolve));
  let received = 0;
  const handler = (signal: NodeJS.Signals) => {
    if (++received > 1) {
      logger.error({ signal }, 'second signal during shutdown; exiting now');
      process.exit(1);
    }
    onSignal(signal);
  };
  for (const s of SIGNALS) process.on(s, handler);

  let failure: Error | undefined;
  const reason = await Promise.race([sidecar.start().then(() => Promise.race([signalled, sidecar.failed])), signalled]).catch(
    (err: Error) => {
      failure = err;
      logger.fatal({ err }, 'start-up failed');
      return 'start-up failed';
    },
  );

  // Backstop: whatever hangs (a request stuck on a dead database, a socket), the process goes.
  const force = setTimeout(() => {
    logger.error({ timeoutMs: config.shutdownTimeoutMs }, 'shutdown timed out; forcing exit');
    process.exit(1);
  }, config.shutdownTimeoutMs);
  force.unref();
  try {
    await sidecar.stop(reason);
  } finally {
    clearTimeout(force);
    for (const s of SIGNALS) process.off(s, handler);
  }
  if (failure) throw failure;
}
