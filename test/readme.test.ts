import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { BOT_DIR, botPrismaModule } from './helpers/bot.js';
import { ROOT } from './helpers/db.js';
import { compileSnippet } from './helpers/tsc.js';

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

const compile = (code: string) => compileSnippet(dir, code);

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
