import type { FastifyInstance } from 'fastify';
import type { MemoryClient, SearchInput, StoreInput } from '../../client/memory-sync.js';
import type { ErrorBody } from '../protocol.js';
import { idParams, searchBody, storeBody } from '../schemas.js';

/** The lookup and write API: a thin HTTP face on the engine's MemoryClient. */
export function apiRoutes(app: FastifyInstance, client: MemoryClient): void {
  app.get<{ Params: { id: string } }>('/v1/personalities/:id', { schema: { params: idParams } }, async (req, reply) => {
    const personality = await client.getPersonality(req.params.id);
    if (personality === null) {
      const body: ErrorBody = { error: `personality ${req.params.id} not found`, code: 'not_found' };
      return reply.code(404).send(body);
    }
    return personality;
  });

  app.post<{ Body: SearchInput }>('/v1/memories/search', { schema: { body: searchBody } }, async (req) => {
    return { results: await client.findSimilarMemories(req.body) };
  });

  app.post<{ Body: StoreInput }>('/v1/memories', { schema: { body: storeBody } }, async (req, reply) => {
    const id = await client.storeMemory(req.body);
    return reply.code(201).send({ id });
  });

  app.delete<{ Params: { id: string } }>('/v1/memories/:id', { schema: { params: idParams } }, async (req, reply) => {
    if (await client.deleteMemory(req.params.id)) return reply.code(204).send();
    const body: ErrorBody = { error: `memory ${req.params.id} not found`, code: 'not_found' };
    return reply.code(404).send(body);
  });
}
