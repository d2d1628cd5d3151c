import { Writable } from 'node:stream';
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { LogLimiter } from '../src/log-limit.js';

describe('LogLimiter', () => {
  it('logs at most N lines per kind per second and reports the rest in one line', async () => {
    const lines: Array<Record<string, unknown>> = [];
    let onSummary: () => void = () => {};
    const summary = new Promise<void>((r) => (onSummary = r));
    const sink = new Writable({
      write(chunk, _enc, done) {
        const line = JSON.parse(String(chunk)) as Record<string, unknown>;
        lines.push(line);
        if (typeof line.suppressed === 'number') onSummary();
        done();
      },
    });
    const limiter = new LogLimiter(pino({ level: 'warn' }, sink), 5);
    for (let i = 0; i < 1000; i++) limiter.warn('invalid', { i }, 'invalid notification ignored');
    limiter.warn('retry', {}, 'database call failed; retrying');
    await summary;
    const invalid = lines.filter((l) => l.msg === 'invalid notification ignored');
    expect(invalid).toHaveLength(5);
    expect(lines.filter((l) => l.msg === 'database call failed; retrying')).toHaveLength(1);
    const s = lines.find((l) => l.kind === 'invalid');
    expect(s).toMatchObject({ suppressed: 995 });
  });
});
