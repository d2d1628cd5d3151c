import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** A port nobody listens on right now. */
export async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/**
 * A bus server of our own, for restarts (the shared ones on 4222/6379 must
 * stay up). Resolves once the server logs that it is ready.
 */
export class OwnServer {
  private child: ChildProcess | undefined;
  readonly dir = mkdtempSync(join(tmpdir(), 'ms-bus-'));

  private constructor(
    readonly kind: 'nats' | 'redis',
    readonly port: number,
    private readonly extra: string[],
  ) {}

  static async start(kind: 'nats' | 'redis', extra: string[] = []): Promise<OwnServer> {
    const s = new OwnServer(kind, await freePort(), extra);
    await s.up();
    return s;
  }

  async up(): Promise<void> {
    mkdirSync(this.dir, { recursive: true });
    const [cmd, args, ready] =
      this.kind === 'nats'
        ? (['nats-server', ['-a', '127.0.0.1', '-p', String(this.port), '-js', '-sd', this.dir, ...this.extra], /Server is ready/] as const)
        : (['redis-server', ['--port', String(this.port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', this.dir, ...this.extra], /Ready to accept connections/] as const);
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    this.child = child;
    await new Promise<void>((resolve, reject) => {
      let out = '';
      const onData = (d: Buffer) => {
        out += d.toString();
        if (ready.test(out)) {
          child.stdout!.off('data', onData);
          child.stderr!.off('data', onData);
          resolve();
        }
      };
      child.stdout!.on('data', onData);
      child.stderr!.on('data', onData);
      child.once('exit', (code) => reject(new Error(`${cmd} exited (${code}) before it was ready: ${out.slice(-500)}`)));
    });
    // Keep draining the pipes so the server never blocks on a full one.
    child.stdout!.resume();
    child.stderr!.resume();
  }

  async down(): Promise<void> {
    const child = this.child;
    this.child = undefined;
    if (!child || child.exitCode !== null) return;
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    child.kill('SIGTERM');
    await exited;
  }

  /** Stops the server and deletes what it stored, as a bus that lost its disk. */
  async wipe(): Promise<void> {
    await this.down();
    rmSync(this.dir, { recursive: true, force: true });
  }

  async stop(): Promise<void> {
    await this.down();
    rmSync(this.dir, { recursive: true, force: true });
  }
}
