import type { FastifyInstance } from 'fastify';
import type { EventHub } from '../events.js';
import type { SidecarMetrics } from '../metrics.js';
import type { Readiness } from '../readiness.js';

export interface OpsDeps {
  readiness: Readiness;
  metrics: SidecarMetrics;
  events: EventHub;
  /** The listener's state, sent as the first event to a new subscriber. */
  listenerState: () => string;
}

/** Probes, metrics and the invalidation stream. */
export function opsRoutes(app: FastifyInstance, deps: OpsDeps): void {
  app.get('/healthz', { config: { access: 'open' } }, async () => ({ status: 'ok' }));

  app.get('/readyz', { config: { access: 'open' } }, async (_req, reply) => {
    const report = deps.readiness.report();
    return reply.code(report.ready ? 200 : 503).send(report);
  });

  app.get('/metrics', { config: { access: 'metrics' } }, async (_req, reply) => {
    const text = await deps.metrics.render();
    return reply.type(deps.metrics.contentType).send(text);
  });

  // No HEAD twin: a hijacked stream never ends, so a HEAD would hang.
  app.get('/v1/events', { config: { access: 'read' }, exposeHeadRoute: false }, (_req, reply) => {
    reply.hijack();
    deps.events.add(reply.raw, { listener: deps.listenerState() });
  });
}
