import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { ROOT } from '../helpers/db.js';

export const BIN = join(ROOT, 'bin', 'memory-sync.js');

/** Every child started here, so a test that fails half-way leaves no sidecar running. */
const children = new Set<ChildProcess>();
process.once('exit', () => {
  for (const c of children) c.kill('SIGKILL');
});

/** Kills what a failed test left running; call it from afterAll. */
export async function killLeftovers(): Promise<void> {
  await Promise.all(
    [...children].map((c) => {
      if (c.exitCode !== null || c.signalCode !== null) return undefined;
      c.kill('SIGKILL');
      return once(c, 'exit');
    }),
  );
}

export interface LogLine {
  level: number;
  time: number;
  msg: string;
  [key: string]: unknown;
}

type Waiter = { pred: (l: LogLine) => boolean; from: number; resolve: (l: LogLine) => void };

/**
 * A real `memory-sync start` child process. Its JSON log lines are the
 * events tests wait on: "listening" (with the port it got), "ready",
 * "not ready", "job done", "notification", ...
 */
export class SidecarProcess {
  readonly logs: LogLine[] = [];
  stderr = '';
  url = '';
  readonly exited: Promise<number | null>;
  private waiters: Waiter[] = [];

  constructor(readonly proc: ChildProcess) {
    children.add(proc);
    this.exited = once(proc, 'exit').then(([code]) => {
      children.delete(proc);
      return code as number | null;
    });
    proc.stderr!.setEncoding('utf8').on('data', (d: string) => (this.stderr += d));
    createInterface({ input: proc.stdout! }).on('line', (line) => {
      let parsed: LogLine;
      try {
        parsed = JSON.parse(line) as LogLine;
      } catch {
        parsed = { level: 0, time: Date.now(), msg: line };
      }
      this.logs.push(parsed);
      const index = this.logs.length - 1;
      this.waiters = this.waiters.filter((w) => {
        if (index < w.from || !w.pred(parsed)) return true;
        w.resolve(parsed);
        return false;
      });
    });
  }

  /** Position in the log, for waiting on lines written after it. */
  mark(): number {
    return this.logs.length;
  }

  /** The first line from `from` on that matches; rejects if none comes in time or the process exits. */
  waitForLog(pred: (l: LogLine) => boolean, from = 0, timeoutMs = 15_000): Promise<LogLine> {
    const hit = this.logs.slice(from).find(pred);
    if (hit) return Promise.resolve(hit);
    return new Promise<LogLine>((resolve, reject) => {
      const timer = setTimeout(() => fail(`no matching log line within ${timeoutMs} ms`), timeoutMs);
      const fail = (why: string) => {
        this.waiters = this.waiters.filter((w) => w !== waiter);
        const tail = this.logs.slice(-15).map((l) => JSON.stringify(l)).join('\n');
        reject(new Error(`${why}\nlast lines:\n${tail}\nstderr:\n${this.stderr}`));
      };
      const waiter: Waiter = {
        pred,
        from,
        resolve: (l) => {
          clearTimeout(timer);
          resolve(l);
        },
      };
      this.waiters.push(waiter);
      void this.exited.then((code) => {
        clearTimeout(timer);
        if (this.waiters.includes(waiter)) fail(`process exited (${code}) before a matching log line`);
      });
    });
  }

  waitForMsg(msg: string, from = 0, timeoutMs?: number): Promise<LogLine> {
    return this.waitForLog((l) => l.msg === msg, from, timeoutMs);
  }

  /** Sends the signal and resolves with the exit code. */
  async stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<number | null> {
    if (this.proc.exitCode === null && this.proc.signalCode === null) this.proc.kill(signal);
    return this.exited;
  }

  async request(method: string, path: string, body?: unknown): Promise<{ status: number; json: any; text: string }> {
    const res = await fetch(this.url + path, {
      method,
      headers: body === undefined ? {} : { 'content-type': 'application/json' },
      body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
    });
    const text = await res.text();
    let json: unknown = null;
    try {
      json = text ? JSON.parse(text) : null;
    } catch {
      json = null;
    }
    return { status: res.status, json, text };
  }
}

/** The environment a sidecar gets: nothing inherited but PATH, so the host's settings cannot leak in. */
export function sidecarEnv(env: Record<string, string>): NodeJS.ProcessEnv {
  return { PATH: process.env.PATH, MEMORY_SYNC_PORT: '0', MEMORY_SYNC_SUMMARY_INTERVAL_MS: '0', ...env };
}

/** Spawns `memory-sync start`; resolves once it listens (and, by default, is ready). */
export async function spawnSidecar(env: Record<string, string>, options: { ready?: boolean } = {}): Promise<SidecarProcess> {
  const proc = spawn(process.execPath, [BIN, 'start'], { cwd: ROOT, env: sidecarEnv(env), stdio: ['ignore', 'pipe', 'pipe'] });
  const sc = new SidecarProcess(proc);
  try {
    sc.url = (await sc.waitForMsg('listening')).url as string;
    if (options.ready ?? true) await sc.waitForMsg('ready');
  } catch (err) {
    proc.kill('SIGKILL');
    throw err;
  }
  return sc;
}

export interface SseEvent {
  event: string;
  data: any;
}

/** A /v1/events subscriber: next() resolves with the next event, matching `pred` when given. */
export async function subscribe(url: string): Promise<{ next(pred?: (e: SseEvent) => boolean): Promise<SseEvent>; close(): void }> {
  const abort = new AbortController();
  const res = await fetch(`${url}/v1/events`, { signal: abort.signal });
  if (res.status !== 200 || !res.body) throw new Error(`/v1/events answered ${res.status}`);
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  const queue: SseEvent[] = [];
  let buffer = '';
  const next = async (pred: (e: SseEvent) => boolean = () => true): Promise<SseEvent> => {
    for (;;) {
      const i = queue.findIndex(pred);
      if (i >= 0) return queue.splice(0, i + 1).pop()!;
      const { value, done } = await reader.read();
      if (done) throw new Error('event stream ended');
      buffer += value;
      let end;
      while ((end = buffer.indexOf('\n\n')) >= 0) {
        const frame = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const event = /^event: (.*)$/m.exec(frame)?.[1];
        const data = /^data: (.*)$/m.exec(frame)?.[1];
        if (event && data) queue.push({ event, data: JSON.parse(data) });
      }
    }
  };
  return { next, close: () => abort.abort() };
}
