import { describe, expect, it } from 'vitest';
import { ConfirmTracker } from '../../../src/sources/replication/confirm.js';

describe('ConfirmTracker', () => {
  it('advances over commits handled at once', () => {
    const t = new ConfirmTracker(100n);
    t.commit(150n, true);
    t.commit(200n, true);
    expect(t.safe).toBe(200n);
  });

  it('never passes a commit that is not handled yet, whatever follows it', () => {
    const t = new ConfirmTracker(100n);
    t.commit(150n, false);
    t.commit(200n, false);
    t.idle(250n);
    expect(t.safe).toBe(100n);
    t.confirm(150n);
    expect(t.safe).toBe(150n);
    expect(t.pending).toBe(1);
    t.confirm(200n);
    expect(t.safe).toBe(250n); // the keepalive after them is safe now
  });

  it('a keepalive between transactions is safe when nothing is pending', () => {
    const t = new ConfirmTracker(100n);
    t.idle(300n);
    expect(t.safe).toBe(300n);
    t.idle(250n); // never backwards
    expect(t.safe).toBe(300n);
  });

  it('a confirmation of what an earlier stream handed out still counts after a restart', () => {
    const t = new ConfirmTracker(100n);
    t.commit(150n, false);
    t.commit(200n, false);
    t.restart(100n); // reconnect: the server sends 150 and 200 again
    t.confirm(200n); // the relay's queue confirms the earlier copies
    expect(t.safe).toBe(200n);
    t.commit(150n, false); // the replays, already confirmed
    t.commit(200n, false);
    t.confirm(200n);
    expect(t.safe).toBe(200n);
  });

  it('does not jump over a pending commit when a later one is confirmed out of order', () => {
    const t = new ConfirmTracker(0n);
    t.commit(10n, false);
    t.commit(20n, false);
    // confirm(20) means everything up to 20 is handled (confirmations come in order)
    t.confirm(20n);
    expect(t.safe).toBe(20n);
    t.commit(30n, false);
    t.confirm(25n);
    expect(t.safe).toBe(25n);
    t.commit(40n, true);
    expect(t.safe).toBe(25n);
  });
});
