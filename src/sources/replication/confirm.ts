/**
 * Which WAL position the slot may be confirmed to: everything at or before
 * it has been handled. Commits are handed out in order and handled either at
 * once (the cache core applies in its `change` handler) or later (a relay,
 * once the bus took them); a keepalive between transactions says that
 * nothing of ours lies before its position. The position advances only over
 * a prefix that is wholly handled, so a crash never skips a transaction.
 */
export class ConfirmTracker {
  private entries: Array<{ lsn: bigint; done: boolean }> = [];
  private _safe: bigint;

  constructor(start: bigint) {
    this._safe = start;
  }

  /** Everything at or before this position is handled. */
  get safe(): bigint {
    return this._safe;
  }

  /** Commits handed out and not yet handled. */
  get pending(): number {
    return this.entries.filter((e) => !e.done).length;
  }

  /** A new stream starts at the current safe position (the server resends what follows it). */
  restart(at: bigint): void {
    this.entries = [];
    if (at > this._safe) this._safe = at;
  }

  /** A commit ending at `lsn` was handed out; `done` when it is handled already. */
  commit(lsn: bigint, done: boolean): void {
    this.entries.push({ lsn, done });
    this.advance();
  }

  /** A keepalive at `lsn`, outside any transaction: nothing before it remains to hand out. */
  idle(lsn: bigint): void {
    const last = this.entries.at(-1);
    if (last?.done && this.entries.length > 1) last.lsn = lsn > last.lsn ? lsn : last.lsn;
    else this.entries.push({ lsn, done: true });
    this.advance();
  }

  /**
   * Every commit ending at or before `lsn` is handled. Handing out is in
   * order, so the caller has handled everything before it too (including
   * what an earlier stream handed out and this one sends again).
   */
  confirm(lsn: bigint): void {
    for (const e of this.entries) {
      if (e.lsn > lsn) break;
      e.done = true;
    }
    this.advance();
    if (lsn > this._safe && (this.entries.length === 0 || this.entries[0]!.lsn > lsn)) this._safe = lsn;
  }

  private advance(): void {
    while (this.entries[0]?.done) {
      const e = this.entries.shift()!;
      if (e.lsn > this._safe) this._safe = e.lsn;
    }
  }
}
