import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ROOT } from '../helpers/db.js';

// The packed tarball, unpacked where `npm install <tarball>` puts it in a
// dependent project (node_modules/memory-sync). Its dependencies are not
// installed: resolving the package's own exports needs none, and this keeps
// the test offline.
let work: string;
let files: string[];
beforeAll(() => {
  work = mkdtempSync(join(tmpdir(), 'ms-pack-'));
  const [packed] = JSON.parse(execFileSync('npm', ['pack', '--json', '--ignore-scripts', '--pack-destination', work], { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] })) as [
    { filename: string; files: { path: string }[] },
  ];
  files = packed.files.map((f) => f.path);
  const app = join(work, 'bot');
  mkdirSync(join(app, 'node_modules', 'memory-sync'), { recursive: true });
  writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'bot', version: '1.0.0', type: 'module', dependencies: { 'memory-sync': `file:../${packed.filename}` } }));
  execFileSync('tar', ['xzf', join(work, packed.filename), '-C', join(app, 'node_modules', 'memory-sync'), '--strip-components=1']);
}, 60_000);
afterAll(() => {
  if (work) rmSync(work, { recursive: true, force: true });
});

/** import.meta.resolve from the dependent project, as its own code would call it. */
function resolveFromBot(specifier: string): { url?: string; error?: string } {
  const script = `try { console.log(JSON.stringify({ url: import.meta.resolve(${JSON.stringify(specifier)}) })) } catch (e) { console.log(JSON.stringify({ error: e.code })) }`;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { cwd: join(work, 'bot'), encoding: 'utf8' });
  expect(r.stderr).toBe('');
  return JSON.parse(r.stdout) as { url?: string; error?: string };
}

describe('the packed package', () => {
  it('ships the build, schema and migrations (the capture SQL among them), and no benchmarks or tests', () => {
    expect(files).toEqual(expect.arrayContaining(['package.json', 'bin/memory-sync.js', 'dist/src/index.js', 'dist/src/index.d.ts', 'prisma/schema.prisma', 'prisma/migrations/migration_lock.toml', 'prisma/migrations/20261201000000_declared_capture/migration.sql']));
    expect(files.filter((f) => /^prisma\/migrations\/\d+_[^/]+\/migration\.sql$/.test(f)).length).toBeGreaterThan(0);
    expect(files.filter((f) => f.startsWith('dist/bench/') || f.startsWith('test/') || f.startsWith('dist/test/') || f.startsWith('bench/'))).toEqual([]);
    expect(files).not.toContain('scripts/measure-install.sh');
    expect(files.filter((f) => f.startsWith('sql/'))).toEqual([]); // 0.1's folder: the triggers are generated now
  });

  it.each([
    ['memory-sync/prisma/schema.prisma', 'prisma/schema.prisma'],
    ['memory-sync/prisma/migrations/migration_lock.toml', 'prisma/migrations/migration_lock.toml'],
    ['memory-sync/prisma/migrations/20261124000000_init/migration.sql', 'prisma/migrations/20261124000000_init/migration.sql'],
    ['memory-sync/prisma/migrations/20261201000000_declared_capture/migration.sql', 'prisma/migrations/20261201000000_declared_capture/migration.sql'],
    ['memory-sync/package.json', 'package.json'],
  ])('a dependent project resolves %s', (specifier, path) => {
    const { url, error } = resolveFromBot(specifier);
    expect(error).toBeUndefined();
    const file = fileURLToPath(url!);
    expect(file).toBe(join(work, 'bot', 'node_modules', 'memory-sync', path));
    expect(readFileSync(file, 'utf8')).toBe(readFileSync(join(ROOT, path), 'utf8'));
  });

  it('exports the types of the entry points, and nothing unexported', () => {
    const pkg = JSON.parse(readFileSync(join(work, 'bot', 'node_modules', 'memory-sync', 'package.json'), 'utf8')) as {
      exports: Record<string, string | { types: string }>;
    };
    for (const entry of Object.values(pkg.exports)) {
      if (typeof entry === 'object') expect(files).toContain(entry.types.replace(/^\.\//, ''));
    }
    expect(resolveFromBot('memory-sync/dist/src/migrations/migrate.js').error).toBe('ERR_PACKAGE_PATH_NOT_EXPORTED');
  });
});
