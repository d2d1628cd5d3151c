import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { BOT_DIR, botPrismaModule } from './helpers/bot.js';
import { ROOT } from './helpers/db.js';

// The README's bot snippet must compile under `tsc --strict` against the package's types.
const dir = join(ROOT, '.tmp', `readme-${process.pid}`);
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** The first ts block after `heading` in README.md. */
function block(heading: string): string {
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
  const at = readme.indexOf(heading);
  if (at < 0) throw new Error(`no "${heading}" in README.md`);
  const m = /```ts\n([\s\S]*?)```/.exec(readme.slice(at));
  if (!m) throw new Error(`no ts block after "${heading}" in README.md`);
  return m[1]!;
}
const botSnippet = () => block('From a bot');

function compile(code: string): string {
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'package.json'), JSON.stringify({ type: 'module' }));
  writeFileSync(join(dir, 'bot.ts'), code);
  writeFileSync(
    join(dir, 'tsconfig.json'),
    JSON.stringify({
      compilerOptions: {
        strict: true,
        noEmit: true,
        target: 'ES2022',
        module: 'NodeNext',
        moduleResolution: 'NodeNext',
        types: ['node'],
        typeRoots: [join(ROOT, 'node_modules', '@types')],
        // On: src/ includes the implementation, whose imports of PGlite need
        // @types/emscripten. The packed declarations are compiled with
        // skipLibCheck off in test/adoption/packed-types.test.ts.
        skipLibCheck: true,
        // `memory-sync` as a dependent project sees it: the package's own entry point.
        paths: { 'memory-sync': [join(ROOT, 'src', 'index.ts')] },
      },
      files: ['bot.ts'],
    }),
  );
  try {
    execFileSync(process.execPath, [join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', dir], { encoding: 'utf8', stdio: 'pipe' });
    return '';
  } catch (err) {
    return String((err as { stdout?: string }).stdout ?? err);
  }
}

describe('README', () => {
  it('the bot snippet is at most 10 lines and compiles with tsc --strict', () => {
    const code = botSnippet();
    expect(code.trim().split('\n').length).toBeLessThanOrEqual(10);
    expect(compile(code)).toBe('');
  }, 60_000);

  it("the own-schema block compiles with tsc --strict against the test bot's generated client", async () => {
    await botPrismaModule(); // generates test/fixtures/bot/generated
    const code = block('## On your own schema').replace("'./generated/prisma/client.js'", JSON.stringify(join(BOT_DIR, 'generated', 'client.js')));
    expect(code).toContain(join(BOT_DIR, 'generated', 'client.js'));
    expect(compile(code)).toBe('');
  }, 120_000);
});
