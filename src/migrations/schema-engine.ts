import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { PrismaPg } from '@prisma/adapter-pg';
import pg from 'pg';
import {
  bindMigrationAwareSqlAdapterFactory,
  type SqlMigrationAwareDriverAdapterFactory,
} from '@prisma/driver-adapter-utils';
import type { SchemaEngine } from '@prisma/schema-engine-wasm';

// ES2023 lib has no WebAssembly types; Node has the global.
const WA = (globalThis as unknown as {
  WebAssembly: {
    instantiate(bytes: Uint8Array, imports: object): Promise<{ instance: { exports: Record<string, unknown> } }>;
  };
}).WebAssembly;

type Bindings = typeof import('@prisma/schema-engine-wasm/schema_engine_bg');

let bindings: Promise<Bindings> | undefined;

// Node 20 cannot `import` a .wasm module without --experimental-wasm-modules,
// so instantiate it by hand and hand it to the wasm-bindgen glue.
async function loadBindings(): Promise<Bindings> {
  const require = createRequire(import.meta.url);
  const gluePath = require.resolve('@prisma/schema-engine-wasm/schema_engine_bg');
  const glue = (await import('@prisma/schema-engine-wasm/schema_engine_bg')) as Bindings & {
    __wbg_set_wasm(exports: Record<string, unknown>): void;
  };
  const bytes = await readFile(join(dirname(gluePath), 'schema_engine_bg.wasm'));
  const { instance } = await WA.instantiate(bytes, { './schema_engine_bg.js': glue });
  glue.__wbg_set_wasm(instance.exports);
  (instance.exports.__wbindgen_start as () => void)();
  return glue;
}

type PgAdapter = Awaited<ReturnType<PrismaPg['connect']>>;

/**
 * @prisma/adapter-pg's executeScript splits a migration on every ';', which
 * breaks dollar-quoted function bodies. Send the script whole, as one
 * simple-protocol query: the native engine does the same, and PostgreSQL runs
 * it as one implicit transaction.
 */
function wholeScripts(factory: PrismaPg): SqlMigrationAwareDriverAdapterFactory {
  const patch = (adapter: PgAdapter): PgAdapter => {
    adapter.executeScript = async (script: string) => {
      try {
        await adapter.underlyingDriver().query(script);
      } catch (err) {
        (adapter as unknown as { onError(e: unknown): never }).onError(err);
      }
    };
    return adapter;
  };
  return {
    provider: factory.provider,
    adapterName: factory.adapterName,
    connect: async () => patch(await factory.connect()),
    connectToShadowDb: async () => patch(await factory.connectToShadowDb()),
  };
}

export interface EngineHandle {
  engine: SchemaEngine;
  /** Closes the engine's connection(s). */
  close(): Promise<void>;
}

/**
 * A Prisma schema engine that talks to PostgreSQL through @prisma/adapter-pg:
 * no native binary, no download.
 */
export async function openSchemaEngine(
  databaseUrl: string,
  schema: { path: string; content: string },
  log: (line: string) => void = () => {},
): Promise<EngineHandle> {
  bindings ??= loadBindings();
  const glue = await bindings;
  const pool = new pg.Pool({ connectionString: databaseUrl, max: 2 });
  pool.on('error', (err) => log(`schema engine pool: ${err.message}`));
  const factory = bindMigrationAwareSqlAdapterFactory(wholeScripts(new PrismaPg(pool)));
  const engine = await glue.SchemaEngine.new(
    { datamodels: [[schema.path, schema.content]] },
    (line: string) => log(line),
    factory,
  );
  return {
    engine,
    async close() {
      engine.free();
      await pool.end();
    },
  };
}

export function schemaEngineVersion(): Promise<string> {
  bindings ??= loadBindings();
  return bindings.then((b) => b.version());
}
