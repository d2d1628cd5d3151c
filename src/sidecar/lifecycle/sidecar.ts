import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import { createMemorySync, type MemorySync } from '../../client/memory-sync.js';
import type { Declaration } from '../../schema/declaration.js';
import { findDeclaration } from '../../schema/load.js';
import type { SidecarConfig } from '../../config.js';
import { migrate } from '../../migrations/migrate.js';
import { NotMigratedError } from '../../contract/errors.js';
import { DEFAULT_MIGRATIONS_DIR, DEFAULT_SCHEMA_PATH } from '../../paths.js';
import { EventHub } from '../events.js';
import { dedicatedConnection, embeddedConnection, type Scheduler } from '../jobs.js';
import { startMaintenance } from '../maintenance.js';
import { SidecarMetrics } from '../metrics.js';
import { NotificationLog } from '../notification-log.js';
import { Readiness } from '../readiness.js';
import { buildServer } from '../server.js';
import { checkExposure } from '../auth.js';
import { configSummary } from '../logger.js';
import { assertPrivileges, jobNeeds } from '../../capture/privileges.js';
import { withRetry } from '../../backend/retry.js';
import { sleepUnlessAborted } from '../../sources/backoff.js';

/** Leaves room, before the 10 s backstop, for one more pool connect attempt (5 s) to fail. */
const DRAIN_GRACE_MS = 4_000;
/** How often an unmigrated database is checked again. */
const NOT_MIGRATED_RECHECK_MS = 5_000;


/**
 * One sidecar: engine, HTTP server, notification log, metrics and
 * maintenance jobs. start() returns once HTTP listens; readiness follows
 * when the pool and LISTEN are up. stop() may be called at any point.
 */
export class Sidecar {
  readonly readiness = new Readiness();
  private client: MemorySync<Declaration> | undefined;
  private app: FastifyInstance | undefined;
  private scheduler: Scheduler | undefined;
  private notifications: NotificationLog | undefined;
  private readonly lifetime = new AbortController();
  private starting: Promise<unknown> = Promise.resolve();
  private stopping: Promise<void> | undefined;
  private fatal: (err: Error) => void = () => {};
  /** Rejects when start-up fails after start() has returned (it never resolves). */
  readonly failed = new Promise<never>((_, reject) => (this.fatal = reject));
  private lastReady = false;

  constructor(
    private readonly config: SidecarConfig,
    private readonly logger: Logger,
  ) {
    this.failed.catch(() => {}); // observed by the caller when it cares
  }

  /** The HTTP base URL; resolves once the server listens. */
  async start(): Promise<string> {
    const step = this.startUp();
    this.starting = step.catch(() => {});
    return step;
  }

  private async startUp(): Promise<string> {
    const { config, logger } = this;
    const insecure = checkExposure(config); // protected mode: no token on a non-loopback bind is refused here
    logger.info(configSummary(config), 'config');
    if (insecure) logger.warn({ host: config.host }, insecure);
    // A declaration (named, or memory-sync.config.* here) means the bot's own schema: memory-sync's migrations are not for it.
    if (config.migrate && config.databaseUrl && findDeclaration(config.configPath)) {
      logger.warn('MEMORY_SYNC_MIGRATE applies memory-sync\'s own migrations; with a declaration of your schema, run `memory-sync adopt` instead');
    } else if (config.migrate && config.databaseUrl) {
      logger.info('applying migrations (MEMORY_SYNC_MIGRATE)');
      // migrate() serializes concurrent runs on an advisory lock: one instance applies, the others find nothing pending.
      const { applied } = await migrate({
        databaseUrl: config.databaseUrl,
        migrationsDir: DEFAULT_MIGRATIONS_DIR,
        schemaPath: DEFAULT_SCHEMA_PATH,
        log: (line) => logger.debug({ component: 'migrate' }, line),
      });
      logger.info({ applied }, applied.length ? 'migrations applied' : 'no pending migrations');
    }
    if (this.lifetime.signal.aborted) throw new Error('stopped during start-up');

    const client = createMemorySync<Declaration>({ ...config.engine, config: config.configPath, logger: logger.child({ component: 'engine' }) });
    this.client = client;
    const readiness = this.readiness;
    readiness.attach({
      get state() {
        return client.sourceState;
      },
      get isUp() {
        return client.sourceState === 'up';
      },
      get name() {
        return client.stats().source;
      },
    });
    const metrics = new SidecarMetrics(client);
    const events = new EventHub();
    const notifications = new NotificationLog({ logger: logger.child({ component: 'notifications' }), ratePerSecond: config.logRate });
    this.notifications = notifications;

    client.on('invalidation', (info) => {
      notifications.record(info);
      metrics.invalidation(info);
      events.invalidation(info);
    });
    client.on('invalid', () => metrics.invalidNotification());
    client.on('flush', (reason) => events.send('flush', { reason }));
    // Subscribers that connected while LISTEN was still coming up learn it is up now.
    client.on('up', () => events.send('state', { listener: 'up' }));
    client.on('down', (reason) => {
      events.send('down', { reason });
      this.readinessChanged(reason);
    });
    client.on('reconnect', () => {
      metrics.reconnect();
      // A remote local cache flushes on every sidecar reconnect, lost or not: it cannot replay.
      events.send('reconnect', {});
      this.readinessChanged('listener reconnected');
    });

    const app = buildServer({
      client,
      listenerState: () => client.sourceState,
      readiness,
      metrics,
      events,
      logger: logger.child({ component: 'http' }),
      auth: config.auth,
    });
    this.app = app;
    await app.listen({ host: config.host, port: config.port });
    const address = app.server.address();
    const port = typeof address === 'object' && address ? address.port : config.port;
    const host = config.host.includes(':') ? `[${config.host}]` : config.host;
    const url = `http://${host}:${port}`;
    logger.info({ url, port }, 'listening');

    void this.becomeReady(client, metrics).catch((err: Error) => {
      if (!this.lifetime.signal.aborted) this.fatal(err);
    });
    return url;
  }

  private async becomeReady(client: MemorySync<Declaration>, metrics: SidecarMetrics): Promise<void> {
    const signal = this.lifetime.signal;
    // client.start() waits out an unreachable database and rejects on a permanent
    // error (the process then exits non-zero); an unmigrated schema is waited out
    // here, 503 on /readyz saying what to run, so a migration run beside us is picked up.
    for (let attempt = 1; ; attempt++) {
      try {
        await client.start();
        break;
      } catch (err) {
        if (!(err instanceof NotMigratedError) || signal.aborted) throw err;
        this.readiness.problem = err.message;
        if (attempt === 1) this.logger.error({ code: err.code }, err.message);
        this.readinessChanged('database not migrated');
        await sleepUnlessAborted(NOT_MIGRATED_RECHECK_MS, signal);
        if (signal.aborted) return;
      }
    }
    if (signal.aborted) return;
    await withRetry(() =>
      assertPrivileges(client.database, jobNeeds(client.binding, this.config.jobs), 'the declared retention jobs (MEMORY_SYNC_HISTORY_TTL_DAYS, MEMORY_SYNC_MEMORY_CAP; 0 turns one off)'),
    );
    this.readiness.problem = undefined;
    this.readiness.poolUp = true;
    this.readinessChanged(`database and change source (${client.stats().source}) up`);
    // Jobs use a connection of their own, direct when MEMORY_SYNC_LISTEN_URL is set
    // (session advisory locks need one backend; a transaction-mode PgBouncer would not give that).
    const jobsUrl = this.config.engine.listener.databaseUrl ?? this.config.databaseUrl;
    this.scheduler = startMaintenance({
      connect: jobsUrl ? dedicatedConnection(jobsUrl) : embeddedConnection(client.database),
      logger: this.logger.child({ component: 'jobs' }),
      metrics,
      config: this.config.jobs,
      binding: client.binding,
      resolved: client.resolved,
    });
  }

  private readinessChanged(reason: string): void {
    const report = this.readiness.report();
    if (report.ready === this.lastReady) return;
    this.lastReady = report.ready;
    if (report.ready) this.logger.info({ reason, ...report }, 'ready');
    else this.logger.warn({ reason, ...report }, 'not ready');
  }

  /**
   * Stops accepting requests and finishes those in flight, cancels jobs,
   * flushes the notification log, then closes LISTEN and the pools.
   */
  stop(reason: string): Promise<void> {
    this.stopping ??= (async () => {
      this.logger.info({ reason }, 'shutting down');
      this.readiness.shuttingDown = true;
      this.readinessChanged(reason);
      this.lifetime.abort();
      await this.starting; // a migration in progress finishes; it holds a lock
      // Requests in flight finish; one still waiting out a database outage
      // after the grace period gets its 503 instead of holding the shutdown
      // past its deadline.
      const giveUp = setTimeout(() => this.client?.stopRetrying(), DRAIN_GRACE_MS);
      await Promise.all([this.scheduler?.stop(), this.app?.close()]);
      clearTimeout(giveUp);
      await this.client?.close();
      this.notifications?.flush(); // after LISTEN is closed: nothing can arrive later
      this.logger.info('stopped');
    })();
    return this.stopping;
  }
}
