import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ROOT } from './helpers/db.js';

// The README's bot snippet must compile under `tsc --strict` against the package's types.
const dir = join(ROOT, '.tmp', `readme-${process.pid}`);
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function botSnippet(): string {
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
  const after = readme.slice(readme.indexOf('From a bot'));
  const m = /```ts\n([\s\S]*?)```/.exec(after);
  if (!m) throw new Error('no ts block after "From a bot" in README.md');
  return m[1]!;
}

describe('README', () => {
  it('the bot snippet is at most 10 lines and compiles with tsc --strict', () => {
    const code = botSnippet();
    expect(code.trim().split('\n').length).toBeLessThanOrEqual(10);
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
    const tsc = join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
    let output = '';
    try {
      execFileSync(process.execPath, [tsc, '-p', dir], { encoding: 'utf8', stdio: 'pipe' });
    } catch (err) {
      output = String((err as { stdout?: string }).stdout ?? err);
    }
    expect(output).toBe('');
  }, 60_000);
});
