import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT } from './db.js';

/**
 * tsc --strict's output for `code` as bot.ts of an ESM project in `dir`
 * (empty when it compiles), with `memory-sync` resolved to src/index.ts as a
 * dependent project sees it. The packed declarations are compiled with
 * skipLibCheck off in test/adoption/packed-types.test.ts.
 */
export function compileSnippet(dir: string, code: string): string {
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
        // On: src/ includes the implementation, whose imports of PGlite need @types/emscripten.
        skipLibCheck: true,
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
