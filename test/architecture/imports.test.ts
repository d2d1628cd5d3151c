import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';
import { ROOT } from '../helpers/db.js';

// The import graph of src/, read with TypeScript's own pre-processor (type-only imports count: they
// tie the files together just the same).
const SRC = join(ROOT, 'src');

function files(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) return name === 'generated' ? [] : files(p);
    return p.endsWith('.ts') ? [p] : [];
  });
}

function graph(): Map<string, string[]> {
  const g = new Map<string, string[]>();
  for (const file of files(SRC)) {
    const info = ts.preProcessFile(readFileSync(file, 'utf8'), true, true);
    const deps = info.importedFiles
      .map((f) => f.fileName)
      .filter((s) => s.startsWith('.'))
      .map((s) => resolve(dirname(file), s).replace(/\.js$/, '.ts'))
      .filter((p) => p.startsWith(SRC) && !p.includes('/generated/'));
    g.set(relative(SRC, file), deps.map((d) => relative(SRC, d)));
  }
  return g;
}

/** Every cycle found by a depth-first search, each as its path. */
function cycles(g: Map<string, string[]>): string[][] {
  const found: string[][] = [];
  const state = new Map<string, 'open' | 'done'>();
  const stack: string[] = [];
  const visit = (n: string) => {
    state.set(n, 'open');
    stack.push(n);
    for (const d of g.get(n) ?? []) {
      if (state.get(d) === 'open') found.push([...stack.slice(stack.indexOf(d)), d]);
      else if (!state.has(d)) visit(d);
    }
    stack.pop();
    state.set(n, 'done');
  };
  for (const n of g.keys()) if (!state.has(n)) visit(n);
  return found;
}

// A file at the top of src/ (index.ts, config.ts) is a node of its own.
const folder = (f: string) => (f.includes('/') ? f.slice(0, f.indexOf('/')) : f);

describe('src/ import graph', () => {
  const g = graph();

  it('has no cycles between files', () => {
    expect(cycles(g).map((c) => c.join(' -> '))).toEqual([]);
  });

  it('has no cycles between top-level folders', () => {
    const fg = new Map<string, string[]>();
    for (const [f, deps] of g) {
      const from = folder(f);
      const set = new Set(fg.get(from) ?? []);
      for (const d of deps) if (folder(d) !== from) set.add(folder(d));
      fg.set(from, [...set]);
    }
    expect(cycles(fg).map((c) => c.join(' -> '))).toEqual([]);
  });

  it('keeps src/contract at the bottom: it imports nothing else of ours', () => {
    const outside = [...g].filter(([f]) => folder(f) === 'contract').flatMap(([f, deps]) => deps.filter((d) => folder(d) !== 'contract').map((d) => `${f} -> ${d}`));
    expect(outside).toEqual([]);
  });
});
