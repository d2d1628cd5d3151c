import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import type { Declaration } from '../schema/declaration.js';
import type { MemorySync } from '../client/memory-sync.js';
import type { AuthConfig } from '../config.js';
import { registerAuth } from './auth.js';
import type { EventHub } from './events.js';
import { toHttpError } from './http-errors.js';
import type { SidecarMetrics } from './metrics.js';
import type { ErrorBody } from '../contract/wire.js';
import type { Readiness } from './readiness.js';
import { apiRoutes } from './routes/api.js';
import { opsRoutes } from './routes/ops.js';

export interface ServerDeps {
  client: MemorySync<Declaration>;
  listenerState: () => string;
  readiness: Readiness;
  metrics: SidecarMetrics;
  events: EventHub;
  logger: Logger;
  /** Tokens and whether /metrics is open (src/sidecar/auth.ts). */
  auth: Pick<AuthConfig, 'token' | 'readToken' | 'metricsOpen'>;
}

/** A store carries up to 100,000 characters of content and 64 KiB of metadata besides the embedding. */
const BODY_LIMIT = 2 * 1024 * 1024;

export function buildServer(deps: ServerDeps): FastifyInstance {
  const app = Fastify({
    loggerInstance: deps.logger as FastifyBaseLogger,
    // One line per request would swamp the notification log; 500s are logged below.
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: BODY_LIMIT,
  });

  // Before any route: the rule reads each route's declared access as it is added.
  registerAuth(app, deps.auth);

  app.setErrorHandler((err, req, reply) => {
    const { status, body } = toHttpError(err);
    // 503s come in bursts during a database outage; the metrics count them, the log does not repeat them.
    if (status >= 500 && status !== 503) req.log.error({ err, method: req.method, url: req.url, status }, 'request failed');
    return reply.code(status).send(body);
  });
  app.setNotFoundHandler((req, reply) => {
    const body: ErrorBody = { error: `no route ${req.method} ${req.url}`, code: 'no_route' };
    return reply.code(404).send(body);
  });

  // Draining: a keep-alive connection that was busy when close() began would
  // otherwise stay open (idle) until its 72 s keep-alive timeout, and
  // server.close() waits for it. Tell the client, then close it once idle.
  app.addHook('onSend', (_req, reply, payload, done) => {
    if (deps.readiness.shuttingDown) reply.header('connection', 'close');
    done(null, payload);
  });
  app.addHook('onResponse', (req, reply, done) => {
    deps.metrics.request(req.method, req.routeOptions.url ?? 'unmatched', reply.statusCode, reply.elapsedTime / 1000);
    if (deps.readiness.shuttingDown) app.server.closeIdleConnections();
    done();
  });
  app.addHook('preClose', (done) => {
    deps.events.close();
    done();
  });

  apiRoutes(app, { client: deps.client, events: deps.events });
  opsRoutes(app, deps);
  return app;
}
