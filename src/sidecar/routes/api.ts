import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import type { Declaration } from '../../schema/declaration.js';
import type { MemorySync, PersonalityInput, SearchInput, StoreInput } from '../../client/memory-sync.js';
import { NotFoundError, ValidationError } from '../../contract/errors.js';
import type { EntityShape } from '../../contract/shape.js';
import { entityToWire, toWire } from '../../contract/wire-values.js';
import { parseInput } from '../../validation/parse.js';
import type { EventHub } from '../events.js';

export interface ApiDeps {
  client: MemorySync<Declaration>;
  events: EventHub;
}

function shapeOf(client: MemorySync<Declaration>, name: string): EntityShape {
  const shape = client.schemaShape().entities.find((e) => e.name === name);
  if (!shape) throw new NotFoundError(`no entity ${JSON.stringify(name)} is declared`);
  return shape;
}

/** POST /v1/sync: `token` is echoed as a `barrier` event on /v1/events once the barrier has passed. */
export const syncSchema = z
  .object(
    {
      token: z.string({ error: 'must be a string of 1 to 100 characters' }).min(1).max(100).optional(),
      timeoutMs: z.number({ error: 'must be an integer from 1 to 30000' }).int().min(1).max(30_000).optional(),
    },
    { error: 'must be a JSON object' },
  )
  .default({});

/**
 * The lookup and write API: a thin HTTP face on the engine's MemoryClient.
 * Bodies are validated by the engine itself (src/validation/), so a bad
 * field gets the same message over HTTP as in-process.
 */
export function apiRoutes(app: FastifyInstance, deps: ApiDeps): void {
  const { client, events } = deps;

  // What the declaration caches, for the remote client's local cache and for people.
  app.get('/v1/schema', { config: { access: 'read' } }, async () => client.schemaShape());

  // A declared entity by its id, as Prisma's findUnique with the declared include returns it.
  app.get<{ Params: { entity: string; id: string } }>('/v1/entities/:entity/:id', { config: { access: 'read' } }, async (req) => {
    const shape = shapeOf(client, req.params.entity);
    const value = await client.entity(req.params.entity).get(req.params.id);
    if (value === null) throw new NotFoundError(`${req.params.entity} ${req.params.id} not found`);
    return entityToWire(shape.root, value);
  });

  // By a declared unique lookup: /v1/entities/personality?slug=aria (every field of the lookup).
  app.get<{ Params: { entity: string }; Querystring: Record<string, string | string[]> }>('/v1/entities/:entity', { config: { access: 'read' } }, async (req) => {
    const shape = shapeOf(client, req.params.entity);
    const where: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(req.query ?? {})) {
      if (Array.isArray(v)) throw new ValidationError(k, 'must be given once');
      where[k] = v;
    }
    const value = await client.entity(req.params.entity).get(where);
    if (value === null) throw new NotFoundError(`${req.params.entity} ${new URLSearchParams(where as Record<string, string>).toString()} not found`);
    return entityToWire(shape.root, value);
  });

  app.post<{ Params: { collection: string }; Body: unknown }>('/v1/collections/:collection/search', { config: { access: 'read' } }, async (req) => {
    const shape = client.schemaShape().collections.find((c) => c.name === req.params.collection);
    if (!shape) throw new NotFoundError(`no collection ${JSON.stringify(req.params.collection)} is declared`);
    const results = await client.collection(req.params.collection).search(req.body as never);
    for (const h of results as Record<string, unknown>[]) for (const f of shape.select) h[f.name] = toWire(f, h[f.name]);
    return { results };
  });

  // memory-sync's own schema only: on a declaration of yours these routes are not there.
  const builtinOnly = async () => {
    if (!client.servesBuiltinApi) throw new NotFoundError('this route serves memory-sync\'s own schema; on your declaration use /v1/entities/:entity and /v1/collections/:collection/search');
  };

  app.get<{ Params: { id: string } }>('/v1/personalities/:id', { config: { access: 'read' }, onRequest: builtinOnly }, async (req) => {
    const personality = await client.getPersonality(req.params.id);
    if (personality === null) throw new NotFoundError(`personality ${req.params.id} not found`);
    return personality;
  });

  // 201 when created, 200 when replaced; the body is what GET returns.
  app.put<{ Params: { id: string }; Body: PersonalityInput }>('/v1/personalities/:id', { config: { access: 'write' }, onRequest: builtinOnly }, async (req, reply) => {
    const { personality, created } = await client.upsertPersonality(req.params.id, req.body);
    return reply.code(created ? 201 : 200).send(personality);
  });

  app.delete<{ Params: { id: string } }>('/v1/personalities/:id', { config: { access: 'write' }, onRequest: builtinOnly }, async (req, reply) => {
    if (await client.deletePersonality(req.params.id)) return reply.code(204).send();
    throw new NotFoundError(`personality ${req.params.id} not found`);
  });

  app.post<{ Body: SearchInput }>('/v1/memories/search', { config: { access: 'read' }, onRequest: builtinOnly }, async (req) => {
    return { results: await client.findSimilarMemories(req.body) };
  });

  app.post<{ Body: StoreInput }>('/v1/memories', { config: { access: 'write' }, onRequest: builtinOnly }, async (req, reply) => {
    const id = await client.storeMemory(req.body);
    return reply.code(201).send({ id });
  });

  app.delete<{ Params: { id: string } }>('/v1/memories/:id', { config: { access: 'write' }, onRequest: builtinOnly }, async (req, reply) => {
    if (await client.deleteMemory(req.params.id)) return reply.code(204).send();
    throw new NotFoundError(`memory ${req.params.id} not found`);
  });

  // Answers once every change committed before the request has been applied here.
  app.post('/v1/sync', { config: { access: 'read' } }, async (req, reply) => {
    const { token, timeoutMs } = parseInput(syncSchema, req.body ?? undefined);
    await client.sync(timeoutMs);
    if (token !== undefined) events.send('barrier', { token });
    return reply.code(204).send();
  });
}
