import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The installed package's root (works from src/ under tsx and from dist/). */
function findRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const pkg = join(dir, 'package.json');
    if (existsSync(pkg) && JSON.parse(readFileSync(pkg, 'utf8')).name === 'memory-sync') return dir;
    const up = dirname(dir);
    if (up === dir) throw new Error('memory-sync package root not found');
    dir = up;
  }
}

export const PACKAGE_ROOT = findRoot();
export const DEFAULT_MIGRATIONS_DIR = join(PACKAGE_ROOT, 'prisma', 'migrations');
export const DEFAULT_SCHEMA_PATH = join(PACKAGE_ROOT, 'prisma', 'schema.prisma');
