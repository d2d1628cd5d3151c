import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ROOT } from '../helpers/db.js';

// Issue 18: a user's project installs the packed tarball and nothing else, and
// its strict TypeScript compiles against the packed declarations with
// skipLibCheck off, so every .d.ts the entry points reach is checked: no
// @types package for the user to guess.
//
// The project lives in the OS temp directory, outside this repository, so no
// module resolves upwards into the repository's node_modules. `npm install`
// needs the registry or a warm npm cache (--prefer-offline).

const run = promisify(execFile);
const TSC = join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
let app: string;
let installLog: string;

function readmeBotSnippet(): string {
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
  const m = /```ts\n([\s\S]*?)```/.exec(readme.slice(readme.indexOf('From a bot')));
  if (!m) throw new Error('no ts block after "From a bot" in README.md');
  return m[1]!;
}

/** tsc's output for the project with these files (empty when it compiles). */
async function compile(files: string[]): Promise<string> {
  writeFileSync(
    join(app, 'tsconfig.json'),
    JSON.stringify({
      compilerOptions: { strict: true, noEmit: true, target: 'ES2022', module: 'nodenext', moduleResolution: 'nodenext', skipLibCheck: false },
      files,
    }),
  );
  try {
    await run(process.execPath, [TSC, '-p', 'tsconfig.json'], { cwd: app });
    return '';
  } catch (err) {
    const e = err as { stdout?: string; message: string };
    return e.stdout || e.message;
  }
}

beforeAll(async () => {
  if (!existsSync(join(ROOT, 'dist', 'src', 'index.d.ts'))) throw new Error('dist/ is missing: run `npm run build` first (npm test does)');
  app = mkdtempSync(join(tmpdir(), 'memory-sync-user-'));
  // --ignore-scripts: prepack would rebuild dist/ under the other tests' feet.
  const packed = await run('npm', ['pack', '--json', '--ignore-scripts', '--pack-destination', app], { cwd: ROOT });
  const [{ filename }] = JSON.parse(packed.stdout) as [{ filename: string }];
  writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'user-bot', version: '1.0.0', private: true, type: 'module' }));
  const installed = await run('npm', ['install', '--no-audit', '--no-fund', '--prefer-offline', `./${filename}`], {
    cwd: app,
    env: { ...process.env, npm_config_loglevel: 'warn' },
  });
  installLog = `${installed.stdout}\n${installed.stderr}`;
}, 300_000);
afterAll(() => {
  if (app) rmSync(app, { recursive: true, force: true });
});

describe('a project that installs only the packed tarball', () => {
  it('installs without EBADENGINE on this Node', () => {
    expect(process.versions.node.split('.').map(Number)[0]).toBeGreaterThanOrEqual(20);
    expect(installLog).not.toMatch(/EBADENGINE/);
  });

  it("the packed declarations never import PGlite's types", () => {
    const dist = join(app, 'node_modules', 'memory-sync', 'dist', 'src');
    const leaking = (readdirSync(dist, { recursive: true }) as string[])
      .filter((f) => f.endsWith('.d.ts'))
      .filter((f) => /from ['"]@electric-sql\//.test(readFileSync(join(dist, f), 'utf8')));
    expect(leaking).toEqual([]);
  });

  it("compiles the README's bot snippet with tsc --strict, module nodenext, skipLibCheck false", async () => {
    writeFileSync(join(app, 'bot.ts'), readmeBotSnippet());
    expect(await compile(['bot.ts'])).toBe('');
  }, 120_000);

  it('compiles against every exported entry point with types (memory-sync, memory-sync/prisma-client)', async () => {
    writeFileSync(
      join(app, 'entry-points.ts'),
      [
        `import { createMemorySync, MemorySyncError, type MemorySyncOptions, type ChangeSource } from 'memory-sync';`,
        `import { PrismaClient, type Personality } from 'memory-sync/prisma-client';`,
        `const options: MemorySyncOptions = { embedded: { inMemory: true } };`,
        `const memory = createMemorySync(options);`,
        `const source: () => ChangeSource = () => memory.source;`,
        `const name: (p: Personality) => string = (p) => p.name;`,
        `export { memory, source, name, PrismaClient, MemorySyncError };`,
      ].join('\n'),
    );
    expect(await compile(['entry-points.ts'])).toBe('');
  }, 120_000);

  it('the check can fail: a type error in the snippet is reported', async () => {
    writeFileSync(join(app, 'broken.ts'), `${readmeBotSnippet()}\nconst n: number = aria.systemPrompt;\n`);
    expect(await compile(['broken.ts'])).toMatch(/broken\.ts\(\d+,\d+\): error TS2322/);
  }, 120_000);
});
