import { spawnSync } from 'node:child_process';
import { networkInterfaces } from 'node:os';
import type { AddressInfo } from 'node:net';
import pino from 'pino';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { ConfigError } from '../../src/contract/errors.js';
import type { MemorySync } from '../../src/client/memory-sync.js';
import { checkExposure, isLoopback, routeAccess, type Access } from '../../src/sidecar/auth.js';
import { EventHub } from '../../src/sidecar/events.js';
import { SidecarMetrics } from '../../src/sidecar/metrics.js';
import { Readiness } from '../../src/sidecar/readiness.js';
import { buildServer } from '../../src/sidecar/server.js';
import { startClient } from '../helpers/client.js';
import { createMigratedDatabase, ROOT, type TestDb } from '../helpers/db.js';
import { BIN, killLeftovers, sidecarEnv, spawnSidecar } from './helpers.js';

const FULL = 'full-token-0123456789abcdef';
const READ = 'read-token-0123456789abcdef';
const WRONG = 'wrong-token-0123456789abcdef';
const URL_ = 'postgresql://u@127.0.0.1:5432/db';

function configError(env: Record<string, string>): ConfigError {
  try {
    loadConfig({ DATABASE_URL: URL_, ...env });
  } catch (err) {
    if (err instanceof ConfigError) return err;
    throw err;
  }
  throw new Error('expected a ConfigError');
}

describe('token variables', () => {
  it('are read into auth, and bad ones are ConfigErrors naming the variable without echoing the value', () => {
    expect(loadConfig({ DATABASE_URL: URL_, MEMORY_SYNC_TOKEN: FULL, MEMORY_SYNC_READ_TOKEN: READ, MEMORY_SYNC_METRICS_OPEN: '1', MEMORY_SYNC_INSECURE: 'true' }).auth).toEqual({
      token: FULL,
      readToken: READ,
      metricsOpen: true,
      insecure: true,
    });
    const short = configError({ MEMORY_SYNC_TOKEN: 'short-secret' });
    expect(short).toMatchObject({ variable: 'MEMORY_SYNC_TOKEN', reason: expect.stringMatching(/at least 16 characters/) });
    expect(short.message).not.toContain('short-secret');
    expect(configError({ MEMORY_SYNC_TOKEN: 'has a space in the middle' })).toMatchObject({ variable: 'MEMORY_SYNC_TOKEN', reason: expect.stringMatching(/printable/) });
    expect(configError({ MEMORY_SYNC_TOKEN: 'non-ascii-tökenxxxxxxxxxxx' })).toMatchObject({ variable: 'MEMORY_SYNC_TOKEN' });
    expect(configError({ MEMORY_SYNC_TOKEN: FULL, MEMORY_SYNC_READ_TOKEN: FULL })).toMatchObject({ variable: 'MEMORY_SYNC_READ_TOKEN', reason: expect.stringMatching(/differ/) });
    expect(configError({ MEMORY_SYNC_READ_TOKEN: READ })).toMatchObject({ variable: 'MEMORY_SYNC_READ_TOKEN', reason: expect.stringMatching(/needs MEMORY_SYNC_TOKEN/) });
    expect(configError({ MEMORY_SYNC_TOKEN: FULL, MEMORY_SYNC_READ_TOKEN: 'tiny' })).toMatchObject({ variable: 'MEMORY_SYNC_READ_TOKEN' });
    expect(configError({ MEMORY_SYNC_METRICS_OPEN: 'yes' })).toMatchObject({ variable: 'MEMORY_SYNC_METRICS_OPEN' });
  });
});

describe('protected mode', () => {
  it('knows loopback addresses', () => {
    for (const h of ['127.0.0.1', '127.8.9.10', '::1', '[::1]', '0:0:0:0:0:0:0:1', '::ffff:127.0.0.1', 'localhost', 'LOCALHOST', 'api.localhost']) expect(isLoopback(h), h).toBe(true);
    for (const h of ['0.0.0.0', '::', '10.0.0.5', '192.168.1.2', '::ffff:10.0.0.1', 'fd00::1', 'example.com', 'localhost.example.com', '128.0.0.1']) expect(isLoopback(h), h).toBe(false);
  });

  it('refuses a non-loopback bind without a token, says how to set one; MEMORY_SYNC_INSECURE lets it run with a warning', () => {
    expect(checkExposure({ host: '127.0.0.1', auth: { token: undefined, insecure: false } })).toBeUndefined();
    expect(checkExposure({ host: '0.0.0.0', auth: { token: FULL, insecure: false } })).toBeUndefined();
    expect(() => checkExposure({ host: '0.0.0.0', auth: { token: undefined, insecure: false } })).toThrow(ConfigError);
    expect(checkExposure({ host: '::', auth: { token: undefined, insecure: true } })).toMatch(/without a token \(MEMORY_SYNC_INSECURE\)/);
  });

  it('memory-sync start exits 2 on 0.0.0.0 without MEMORY_SYNC_TOKEN, naming the variable and how to set it', () => {
    const r = spawnSync(process.execPath, [BIN, 'start'], {
      cwd: ROOT,
      env: sidecarEnv({ DATABASE_URL: 'postgresql://nobody@127.0.0.1:1/x', MEMORY_SYNC_HOST: '0.0.0.0' }),
      encoding: 'utf8',
    });
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/^memory-sync: invalid configuration: MEMORY_SYNC_TOKEN: is required when MEMORY_SYNC_HOST \(0\.0\.0\.0\) is not a loopback address/);
    expect(r.stderr).toMatch(/openssl rand -hex 32/);
    expect(r.stderr).toMatch(/MEMORY_SYNC_INSECURE=1/);
    // Refused before anything listens.
    expect(r.stdout).not.toMatch(/"msg":"listening"/);
  });

  describe('on a non-loopback bind', () => {
    let db: TestDb;
    beforeAll(async () => {
      db = await createMigratedDatabase();
    });
    afterAll(async () => {
      await killLeftovers();
      await db?.drop();
    });

    /** An address of this host other than loopback, as another container would reach it; loopback when there is none. */
    const external = Object.values(networkInterfaces()).flat().find((i) => i && i.family === 'IPv4' && !i.internal)?.address ?? '127.0.0.1';
    const PID = '6f9619ff-8b86-4011-b42d-00c04fc964ff';

    it('with MEMORY_SYNC_INSECURE=1 it serves and warns at start', async () => {
      const sc = await spawnSidecar({ DATABASE_URL: db.url, MEMORY_SYNC_HOST: '0.0.0.0', MEMORY_SYNC_INSECURE: '1' });
      try {
        const warning = sc.logs.find((l) => l.level === 40 && /without a token \(MEMORY_SYNC_INSECURE\)/.test(l.msg));
        expect(warning).toMatchObject({ host: '0.0.0.0' });
        const port = new URL(sc.url).port;
        const r = await fetch(`http://${external}:${port}/v1/personalities/${PID}`);
        expect(r.status).toBe(404); // served, no token asked
      } finally {
        expect(await sc.stop()).toBe(0);
      }
    });

    it('with MEMORY_SYNC_TOKEN an unauthenticated PUT and DELETE from another address get 401 and change nothing', async () => {
      const sc = await spawnSidecar({ DATABASE_URL: db.url, MEMORY_SYNC_HOST: '0.0.0.0', MEMORY_SYNC_TOKEN: FULL });
      try {
        expect(sc.logs.some((l) => /MEMORY_SYNC_INSECURE/.test(l.msg))).toBe(false);
        const base = `http://${external}:${new URL(sc.url).port}`;
        const body = JSON.stringify({ name: 'exposed', displayName: 'Exposed', systemPrompt: 'p' });
        const json = { 'content-type': 'application/json' };
        const put = await fetch(`${base}/v1/personalities/${PID}`, { method: 'PUT', headers: json, body });
        expect(put.status).toBe(401);
        expect(await put.json()).toMatchObject({ code: 'unauthorized' });
        expect((await fetch(`${base}/v1/personalities/${PID}`, { method: 'DELETE' })).status).toBe(401);
        expect((await fetch(`${base}/v1/personalities/${PID}`)).status).toBe(401);
        const ok = await fetch(`${base}/v1/personalities/${PID}`, { method: 'PUT', headers: { ...json, authorization: `Bearer ${FULL}` }, body });
        expect(ok.status).toBe(201);
        expect((await fetch(`${base}/healthz`)).status).toBe(200);
      } finally {
        expect(await sc.stop()).toBe(0);
      }
    });
  });
});

describe('access on every registered route', () => {
  let db: TestDb;
  let client: MemorySync;
  const apps: FastifyInstance[] = [];

  beforeAll(async () => {
    db = await createMigratedDatabase();
    client = await startClient(db.url);
  });
  afterAll(async () => {
    await Promise.all(apps.map((a) => a.close()));
    await client?.close();
    await db?.drop();
  });

  /** The sidecar's own server on a real socket, with one route added that declares nothing. */
  async function serve(auth: { token?: string; readToken?: string; metricsOpen: boolean }): Promise<{ app: FastifyInstance; base: string }> {
    const readiness = new Readiness();
    readiness.attach({ state: 'up', name: 'listen', isUp: true });
    readiness.poolUp = true;
    const app = buildServer({
      client,
      listenerState: () => client.sourceState,
      readiness,
      metrics: new SidecarMetrics(client),
      events: new EventHub(),
      logger: pino({ level: 'silent' }),
      auth: { token: auth.token, readToken: auth.readToken, metricsOpen: auth.metricsOpen },
    });
    app.get('/test/undeclared', async () => ({ reached: true }));
    apps.push(app);
    await app.listen({ host: '127.0.0.1', port: 0 });
    return { app, base: `http://127.0.0.1:${(app.server.address() as AddressInfo).port}` };
  }

  const EXAMPLE_ID = '00000000-0000-4000-8000-0000000000a1';
  /** A concrete path for a route pattern: any value will do, the rule runs before the handler. */
  const pathOf = (url: string) => url.replace(/:[A-Za-z_]+/g, EXAMPLE_ID).replace(/\*$/, 'x');

  /** Status, code and challenge of one request; the body is not awaited (the event stream never ends). */
  async function call(base: string, method: string, url: string, token?: string): Promise<{ status: number; code?: string; challenge: string | null }> {
    const abort = new AbortController();
    const headers: Record<string, string> = token === undefined ? {} : { authorization: `Bearer ${token}` };
    const withBody = method === 'POST' || method === 'PUT' || method === 'PATCH';
    if (withBody) headers['content-type'] = 'application/json';
    const res = await fetch(base + url, { method, headers, body: withBody ? '{}' : undefined, signal: abort.signal });
    let code: string | undefined;
    if (res.status === 401 || res.status === 403 || res.status === 404) code = method === 'HEAD' ? undefined : ((await res.json()) as { code: string }).code;
    abort.abort();
    return { status: res.status, code, challenge: res.headers.get('www-authenticate') };
  }

  const allowed = (status: number) => status !== 401 && status !== 403;

  async function expectRule(base: string, method: string, url: string, access: Exclude<Access, 'metrics'>): Promise<void> {
    const where = `${method} ${url} (${access})`;
    const none = await call(base, method, url);
    const wrong = await call(base, method, url, WRONG);
    const read = await call(base, method, url, READ);
    const full = await call(base, method, url, FULL);
    expect(allowed(full.status), where).toBe(true);
    if (access === 'open') {
      for (const r of [none, wrong, read]) expect(allowed(r.status), where).toBe(true);
      return;
    }
    for (const r of [none, wrong]) {
      expect(r.status, where).toBe(401);
      if (method !== 'HEAD') expect(r.code, where).toBe('unauthorized');
      expect(r.challenge, where).toBe('Bearer realm="memory-sync"');
    }
    if (access === 'read') {
      expect(allowed(read.status), where).toBe(true);
    } else {
      expect(read.status, where).toBe(403);
      if (method !== 'HEAD') expect(read.code, where).toBe('forbidden');
      expect(read.challenge, where).toMatch(/error="insufficient_scope"/);
    }
  }

  it('answers 401 without or with a wrong token, 403 for the read token on writes, as each route declares', async () => {
    const { app, base } = await serve({ token: FULL, readToken: READ, metricsOpen: false });
    const routes = routeAccess(app);
    // The list comes from fastify's onRoute hook: routes added later are covered without editing this test.
    expect(routes.length).toBeGreaterThanOrEqual(12);
    expect(routes).toContainEqual({ method: 'GET', url: '/healthz', access: 'open', declared: true });
    expect(routes).toContainEqual({ method: 'PUT', url: '/v1/personalities/:id', access: 'write', declared: true });
    expect(routes).toContainEqual({ method: 'GET', url: '/test/undeclared', access: 'write', declared: false });
    for (const r of routes) await expectRule(base, r.method, pathOf(r.url), r.access === 'metrics' ? 'read' : r.access);
    // Unmatched URLs are closed too: without a token nobody learns which routes exist.
    await expectRule(base, 'GET', '/v1/no-such-route', 'write');
    expect((await call(base, 'GET', '/v1/no-such-route', FULL)).code).toBe('no_route');
  });

  it('opens /metrics with MEMORY_SYNC_METRICS_OPEN, and only it', async () => {
    const { app, base } = await serve({ token: FULL, readToken: READ, metricsOpen: true });
    const routes = routeAccess(app);
    expect(routes.filter((r) => r.access === 'metrics').map((r) => r.url)).toContain('/metrics');
    for (const r of routes) await expectRule(base, r.method, pathOf(r.url), r.access === 'metrics' ? 'open' : r.access);
  });

  it('refuses malformed Authorization headers', async () => {
    const { base } = await serve({ token: FULL, metricsOpen: false });
    const url = `/v1/personalities/${EXAMPLE_ID}`;
    for (const authorization of [FULL, `Basic ${FULL}`, `Bearer`, `Bearer ${FULL}x`, `Bearer ${FULL.slice(0, -1)}`, `Bearer ${FULL} ${FULL}`, `Bearer  `]) {
      const res = await fetch(base + url, { headers: { authorization } });
      expect(res.status, authorization).toBe(401);
    }
    expect((await fetch(base + url, { headers: { authorization: `bearer ${FULL}` } })).status).toBe(404);
  });

  it('asks for nothing when no token is configured (loopback default)', async () => {
    const { app, base } = await serve({ metricsOpen: false });
    for (const r of routeAccess(app)) expect(allowed((await call(base, r.method, pathOf(r.url))).status), `${r.method} ${r.url}`).toBe(true);
  });

  it('rejects a route that declares an unknown access level when it is added', async () => {
    const { app } = await serve({ token: FULL, metricsOpen: false });
    await app.close();
    const fresh = buildServer({
      client,
      listenerState: () => 'up',
      readiness: new Readiness(),
      metrics: new SidecarMetrics(client),
      events: new EventHub(),
      logger: pino({ level: 'silent' }),
      auth: { token: FULL, readToken: undefined, metricsOpen: false },
    });
    apps.push(fresh);
    expect(() => fresh.get('/typo', { config: { access: 'reed' as Access } }, async () => 'x')).toThrow(/config.access must be one of open, read, write, metrics/);
  });
});
