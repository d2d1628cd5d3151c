import { describe, expect, it } from 'vitest';
import { replicationTables } from '../../src/capture/publication.js';
import { loadBotDeclaration } from '../helpers/bot.js';
import { bindDeclaration } from '../../src/schema/load.js';

/* What the publication carries, from the test bot's declaration (pure). */

const binding = bindDeclaration(await loadBotDeclaration());

describe('replicationTables', () => {
  it('publishes each watched table with its key columns only, leaving its replica identity as it is', () => {
    const tables = replicationTables(binding, 'public');
    expect(tables.map((t) => t.name).sort()).toEqual([...binding.watched.values()].map((w) => binding.models.get(w.model)!.table).sort());
    const memories = tables.find((t) => t.name === 'memory_rows')!;
    expect(memories.columns).toContain('persona_id');
    expect(memories.columns).not.toContain('embedding');
    expect(memories.columns).not.toContain('body');
    expect(tables.every((t) => t.replicaIdentity === 'existing' && t.schema === 'public')).toBe(true);
  });
});
