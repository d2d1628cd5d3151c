/**
 * Checks the emulated float32 summations of pgvector's `<=>` against the real loop compiled for
 * each target this machine can build and run: x86-64 with FMA (the portable build's `fma` clone),
 * x86-64 -march=native, and aarch64 NEON under qemu (needs gcc-aarch64-linux-gnu, qemu-user).
 *   npx tsx bench/arithmetic.ts
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { KNOWN_ARITHMETIC, pgvectorDistance, probeVectors } from '../src/cache/hot/int8/pgvector-distance.js';
import { random } from './hot-search.js';

const FLAGS = ['-O2', '-fno-strict-aliasing', '-fwrapv', '-fexcess-precision=standard', '-ftree-vectorize', '-fassociative-math', '-fno-signed-zeros', '-fno-trapping-math'];
const dir = mkdtempSync(join(tmpdir(), 'ms-arith-'));
// From bench/ (tsx) or dist/bench/ (node).
const source = ['..', join('..', '..')].map((up) => join(import.meta.dirname, up, 'scripts', 'arithmetic-harness.c')).find((p) => existsSync(p));
const has = (cmd: string) => {
  try {
    execFileSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
};
const targets = [
  { name: 'x86-64, fma (the portable build on a CPU with FMA)', cc: 'gcc', flags: ['-mfma'], run: [] as string[] },
  { name: 'x86-64, -march=native', cc: 'gcc', flags: ['-march=native'], run: [] },
  { name: 'aarch64, armv8-a (qemu)', cc: 'aarch64-linux-gnu-gcc', flags: ['-static'], run: ['qemu-aarch64'] },
].filter((t) => source && has(t.cc) && (t.run.length === 0 || has(t.run[0]!)));

const next = random(4242);
const cases: { q: Float32Array; rows: Float32Array[] }[] = [];
for (let dim = 1; dim <= 80; dim++) {
  for (const d of [dim, dim + 300, dim + 1500]) {
    const q = Float32Array.from({ length: d }, () => next() - 0.5);
    const rows = Array.from({ length: 12 }, (_, r) => Float32Array.from({ length: d }, () => (next() - 0.5) * [1e-20, 1, 1e15][r % 3]! * (next() < 0.1 ? 1000 : 1)));
    cases.push({ q, rows });
  }
}
for (const dim of [16, 384, 1536]) {
  const { rows, query } = probeVectors(dim);
  cases.push({ q: query, rows });
}
const parts: Buffer[] = [];
for (const c of cases) {
  const h = Buffer.alloc(8);
  h.writeInt32LE(c.q.length, 0);
  h.writeInt32LE(c.rows.length, 4);
  parts.push(h, Buffer.from(c.q.buffer.slice(0)), ...c.rows.map((r) => Buffer.from(r.buffer.slice(0))));
}
writeFileSync(join(dir, 'in.bin'), Buffer.concat(parts));
const total = cases.reduce((n, c) => n + c.rows.length, 0);

for (const t of targets) {
  const bin = join(dir, t.name.replace(/\W+/g, '-'));
  execFileSync(t.cc, [...FLAGS, ...t.flags, '-o', bin, source!, '-lm']);
  const [cmd, ...args] = [...t.run, bin, join(dir, 'in.bin'), join(dir, 'out.bin')];
  execFileSync(cmd!, args);
  const out = new Float64Array(readFileSync(join(dir, 'out.bin')).buffer.slice(0));
  const matches = KNOWN_ARITHMETIC.map((a) => {
    let k = 0;
    let n = 0;
    for (const c of cases) for (const r of c.rows) if (Object.is(pgvectorDistance(r, c.q, a), out[k++])) n++;
    return `${a.name} ${n}`;
  });
  console.log(`${t.name}: of ${total} distances, ${matches.join(', ')}`);
}
if (targets.length === 0) console.log(source ? 'no target could be built (gcc missing)' : 'scripts/arithmetic-harness.c not found');
