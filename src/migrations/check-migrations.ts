import { readdir, readFile, stat } from 'node:fs/promises';
import { join, relative } from 'node:path';

/** Indexes Prisma cannot declare, so `migrate dev` proposes dropping them as drift. */
export const PROTECTED_INDEXES = ['idx_memories_embedding'];

export interface Finding {
  file: string;
  line: number;
  index: string;
  statement: string;
}

/** Blanks out comments and string bodies, keeping offsets, so a commented-out DROP is ignored. */
function maskSql(sql: string): string {
  return sql.replace(
    /--[^\n]*|\/\*[\s\S]*?\*\/|'(?:[^']|'')*'|(\$[A-Za-z_0-9]*\$)[\s\S]*?\1/g,
    (m) => m.replace(/[^\n]/g, ' '),
  );
}

const unquote = (name: string) => {
  const last = name.trim().split('.').pop() ?? '';
  return last.startsWith('"') ? last.slice(1, -1).replace(/""/g, '"') : last.toLowerCase();
};

/** Finds protected indexes dropped in `sql` and not created again later in the same file. */
export function findUnsafeDrops(sql: string, file: string, protectedIndexes = PROTECTED_INDEXES): Finding[] {
  const masked = maskSql(sql);
  const lineAt = (offset: number) => masked.slice(0, offset).split('\n').length;
  const dropped = new Map<string, Finding>();
  const statements = /[^;]+/g;
  for (let m = statements.exec(masked); m; m = statements.exec(masked)) {
    const text = m[0];
    const lead = text.length - text.trimStart().length;
    const offset = m.index + lead;
    const drop = /^\s*DROP\s+INDEX\s+(?:CONCURRENTLY\s+)?(?:IF\s+EXISTS\s+)?([\s\S]+?)(?:\s+(?:CASCADE|RESTRICT))?\s*$/i.exec(text);
    if (drop?.[1]) {
      for (const name of drop[1].split(',').map(unquote)) {
        if (protectedIndexes.includes(name)) {
          dropped.set(name, {
            file,
            line: lineAt(offset),
            index: name,
            statement: sql.slice(offset, m.index + text.length).trim(),
          });
        }
      }
      continue;
    }
    const create = /^\s*CREATE\s+(?:UNIQUE\s+)?INDEX\s+(?:CONCURRENTLY\s+)?(?:IF\s+NOT\s+EXISTS\s+)?("(?:[^"]|"")+"|[\w$]+)/i.exec(text);
    if (create?.[1]) dropped.delete(unquote(create[1]));
  }
  return [...dropped.values()];
}

async function sqlFiles(path: string): Promise<string[]> {
  if (!(await stat(path)).isDirectory()) return [path];
  const out: string[] = [];
  for (const entry of await readdir(path, { withFileTypes: true })) {
    const full = join(path, entry.name);
    if (entry.isDirectory()) out.push(...(await sqlFiles(full)));
    else if (entry.name.endsWith('.sql')) out.push(full);
  }
  return out.sort();
}

/** Checks every .sql file under each path (a folder or a file). */
export async function checkMigrations(paths: string[], protectedIndexes = PROTECTED_INDEXES): Promise<Finding[]> {
  const findings: Finding[] = [];
  for (const path of paths) {
    for (const file of await sqlFiles(path)) {
      const shown = relative(process.cwd(), file) || file;
      findings.push(...findUnsafeDrops(await readFile(file, 'utf8'), shown, protectedIndexes));
    }
  }
  return findings;
}

export function formatFinding(f: Finding): string {
  return `${f.file}:${f.line}: drops protected index "${f.index}" without recreating it: ${f.statement}`;
}
