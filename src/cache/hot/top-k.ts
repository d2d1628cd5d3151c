/**
 * The k best (score, row) pairs seen so far, in the SQL path's order:
 * similarity descending, then id ascending. k is at most 100, so an insertion
 * into a short sorted array beats a heap.
 */
export class TopK {
  readonly scores: number[] = [];
  readonly rows: number[] = [];

  constructor(
    readonly k: number,
    private readonly idOf: (row: number) => string,
  ) {}

  get full(): boolean {
    return this.scores.length === this.k;
  }

  /** The k-th score, or -Infinity while fewer than k are held. */
  get worst(): number {
    return this.full ? this.scores[this.k - 1]! : -Infinity;
  }

  offer(score: number, row: number): void {
    const { scores, rows, k } = this;
    if (scores.length === k) {
      const worst = scores[k - 1]!;
      if (score < worst || (score === worst && this.idOf(row) > this.idOf(rows[k - 1]!))) return;
      scores.pop();
      rows.pop();
    }
    let i = scores.length;
    while (i > 0 && (scores[i - 1]! < score || (scores[i - 1] === score && this.idOf(rows[i - 1]!) > this.idOf(row)))) i--;
    scores.splice(i, 0, score);
    rows.splice(i, 0, row);
  }
}
