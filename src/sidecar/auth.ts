import { createHash, timingSafeEqual } from 'node:crypto';
import { isIP } from 'node:net';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { AuthConfig } from '../config.js';
import { ConfigError, ForbiddenError, UnauthorizedError } from '../contract/errors.js';

/**
 * Who may call a route, declared in its fastify `config`:
 * - `open`: anyone (probes);
 * - `read`: the read token or the full token (lookups, search, sync, events);
 * - `write`: the full token only (anything that changes data);
 * - `metrics`: like `read`, or anyone with MEMORY_SYNC_METRICS_OPEN.
 * A route that declares nothing is `write`: a new route is closed until it says otherwise.
 */
export type Access = 'open' | 'read' | 'write' | 'metrics';
export const ACCESS_LEVELS: readonly Access[] = ['open', 'read', 'write', 'metrics'];

declare module 'fastify' {
  interface FastifyContextConfig {
    access?: Access;
  }
}

export interface RouteAccess {
  method: string;
  url: string;
  /** What the route declared, or `write` when it declared nothing. */
  access: Access;
  declared: boolean;
}

const routes = new WeakMap<FastifyInstance, RouteAccess[]>();

/** Every route registered on `app` with its access rule, in registration order (HEAD twins included). */
export function routeAccess(app: FastifyInstance): readonly RouteAccess[] {
  return routes.get(app) ?? [];
}

// SHA-256 first: timingSafeEqual needs equal lengths, and a digest leaks nothing about the token's length.
const digest = (s: string): Buffer => createHash('sha256').update(s, 'utf8').digest();

function matches(presented: Buffer, expected: Buffer | undefined): boolean {
  return expected !== undefined && timingSafeEqual(presented, expected);
}

const BEARER = /^Bearer[ ]+([\x21-\x7e]+)[ ]*$/i;
const CHALLENGE = 'Bearer realm="memory-sync"';

function refuse(reply: FastifyReply, err: UnauthorizedError | ForbiddenError): never {
  // RFC 6750: say how to authenticate, and for a 403 that the scope was too small.
  reply.header('www-authenticate', err instanceof ForbiddenError ? `${CHALLENGE}, error="insufficient_scope"` : CHALLENGE);
  throw err;
}

/**
 * Installs the access rule on `app`: an onRequest hook that reads the route's
 * declared `access` (default `write`) and the `Authorization: Bearer` header,
 * compared in constant time. Without a configured token nothing is checked
 * (loopback, or MEMORY_SYNC_INSECURE; see checkExposure). Unmatched URLs
 * count as `write`, so a caller without a token cannot map the API.
 * Call before any route is added.
 */
export function registerAuth(app: FastifyInstance, config: Pick<AuthConfig, 'token' | 'readToken' | 'metricsOpen'>): void {
  const list: RouteAccess[] = [];
  routes.set(app, list);
  app.addHook('onRoute', (route) => {
    const declared = route.config?.access;
    if (declared !== undefined && !ACCESS_LEVELS.includes(declared)) {
      throw new Error(`route ${String(route.method)} ${route.url}: config.access must be one of ${ACCESS_LEVELS.join(', ')}`);
    }
    for (const method of [route.method].flat()) list.push({ method, url: route.url, access: declared ?? 'write', declared: declared !== undefined });
  });

  if (config.token === undefined) return;
  const full = digest(config.token);
  const readOnly = config.readToken === undefined ? undefined : digest(config.readToken);

  app.addHook('onRequest', async (req: FastifyRequest, reply: FastifyReply) => {
    let access: Access = req.routeOptions.config?.access ?? 'write';
    if (access === 'metrics') access = config.metricsOpen ? 'open' : 'read';
    if (access === 'open') return;
    const header = req.headers.authorization;
    const presented = typeof header === 'string' ? BEARER.exec(header)?.[1] : undefined;
    if (presented === undefined) {
      refuse(reply, new UnauthorizedError('missing token: send `Authorization: Bearer <MEMORY_SYNC_TOKEN>` (createSidecarClient({ token }))'));
    }
    const d = digest(presented);
    // Both comparisons always run: the time taken does not say which token was close.
    const isFull = matches(d, full);
    const isRead = matches(d, readOnly);
    if (!isFull && !isRead) refuse(reply, new UnauthorizedError('invalid token'));
    if (access === 'write' && !isFull) {
      refuse(reply, new ForbiddenError(`${req.method} ${req.routeOptions.url ?? req.url} needs the full token (MEMORY_SYNC_TOKEN); the read token only reads`));
    }
  });
}

/** 127.0.0.0/8, ::1 (also as ::ffff:127.x.x.x) and `localhost`: only this host can connect. */
export function isLoopback(host: string): boolean {
  const h = host.toLowerCase().replace(/^\[|\]$/g, '');
  if (h === 'localhost' || h.endsWith('.localhost')) return true;
  if (isIP(h) === 4) return h.startsWith('127.');
  if (isIP(h) === 6) {
    // The URL parser prints the canonical form: 0:0:0:0:0:0:0:1 is [::1], ::ffff:127.0.0.1 is [::ffff:7f00:1].
    const canonical = new URL(`http://[${h}]`).hostname;
    return canonical === '[::1]' || /^\[::ffff:7f[0-9a-f]{2}:[0-9a-f]{1,4}\]$/.test(canonical);
  }
  return false;
}

/**
 * Protected mode, as Redis's: a sidecar reachable from other hosts must ask
 * for a token. Throws ConfigError (MEMORY_SYNC_TOKEN) on a non-loopback bind
 * without one, unless MEMORY_SYNC_INSECURE; returns the warning to log at
 * every start when that override is what lets it run.
 */
export function checkExposure(config: { host: string; auth: Pick<AuthConfig, 'token' | 'insecure'> }): string | undefined {
  if (config.auth.token !== undefined || isLoopback(config.host)) return undefined;
  if (config.auth.insecure) {
    return `serving ${config.host} without a token (MEMORY_SYNC_INSECURE): anyone who can reach the port can read and rewrite every memory; set MEMORY_SYNC_TOKEN`;
  }
  throw new ConfigError(
    'MEMORY_SYNC_TOKEN',
    `is required when MEMORY_SYNC_HOST (${config.host}) is not a loopback address: set MEMORY_SYNC_TOKEN to a random secret of at least 16 characters (\`openssl rand -hex 32\`) and give it to the clients (createSidecarClient({ token })), bind MEMORY_SYNC_HOST=127.0.0.1, or set MEMORY_SYNC_INSECURE=1 to serve without one`,
  );
}
