import { spawnSync } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ROOT } from '../helpers/db.js';

const BIN = join(ROOT, 'bin', 'memory-sync.js');
const run = (bin: string, ...args: string[]) => spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8' });

describe('memory-sync --version', () => {
  it("prints package.json's version", () => {
    const { version } = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string };
    const r = run(BIN, '--version');
    expect(r.status).toBe(0);
    expect(r.stdout.trim()).toBe(version);
  });
});

describe('memory-sync without a build', () => {
  const temps: string[] = [];
  afterAll(() => {
    for (const dir of temps) rmSync(dir, { recursive: true, force: true });
  });

  /** The package's bin/ and package.json with no dist/, laid out as a clone or as an installed package. */
  function layout(kind: 'clone' | 'clone-with-deps' | 'installed'): string {
    const dir = mkdtempSync(join(tmpdir(), 'ms-nobuild-'));
    temps.push(dir);
    cpSync(join(ROOT, 'bin'), join(dir, 'bin'), { recursive: true });
    cpSync(join(ROOT, 'package.json'), join(dir, 'package.json'));
    if (kind !== 'installed') {
      mkdirSync(join(dir, 'src', 'cli'), { recursive: true });
      writeFileSync(join(dir, 'src', 'cli', 'index.ts'), '');
    }
    if (kind === 'clone-with-deps') symlinkSync(join(ROOT, 'node_modules'), join(dir, 'node_modules'));
    return join(dir, 'bin', 'memory-sync.js');
  }

  it.each([
    ['clone', /From \S+ run: npm ci && npm run build\n$/],
    ['clone-with-deps', /From \S+ run: npm run build\n$/],
    ['installed', /has no dist\/ .*: reinstall memory-sync\.\n$/],
  ] as const)('%s: says what to run, exit 1, no stack trace', (kind, message) => {
    const r = run(layout(kind), 'migrate');
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/^memory-sync: /);
    expect(r.stderr).toMatch(message);
    expect(r.stderr).not.toMatch(/\n\s+at /);
  });
});
