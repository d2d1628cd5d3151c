/**
 * Event-loop slicing: long work is written as a generator that yields at
 * points where it may pause (after each native block scan, each native f32
 * batch, every few dozen JS rescores), and `runSliced` gives the event loop a
 * turn whenever a slice has used its budget.
 */

export interface SliceOptions {
  /**
   * Longest stretch of work between event-loop yields; one step can overrun it.
   * @defaultValue 1 — half a 2 ms block budget, leaving room for one native block scan.
   */
  budgetMs?: number | undefined;
  /**
   * Re-checked after every yield; false abandons the work (resolves null).
   * @defaultValue () => true
   */
  stillCurrent?: (() => boolean) | undefined;
}

/** Runs resumable work to its end in one go. */
export function runToEnd<T>(steps: Generator<number | void, T, void>): T {
  for (;;) {
    const s = steps.next();
    if (s.done) return s.value;
  }
}

/**
 * Runs resumable work, yielding to the event loop when a slice has used its
 * budget; null once abandoned. A step may yield the time it expects its next
 * step to take (ms, e.g. a native scan): the slice then ends before it when
 * the two would run past twice the budget, so no slice runs much past that.
 */
export async function runSliced<T>(steps: Generator<number | void, T, void>, slicing: SliceOptions = {}): Promise<T | null> {
  const budget = slicing.budgetMs ?? 1;
  const stillCurrent = slicing.stillCurrent ?? (() => true);
  let sliceStart = performance.now();
  for (;;) {
    const s = steps.next();
    if (s.done) return s.value;
    const elapsed = performance.now() - sliceStart;
    if (elapsed >= budget || elapsed + (s.value ?? 0) > 2 * budget) {
      await new Promise<void>((resolve) => setImmediate(resolve));
      if (!stillCurrent()) {
        steps.return(undefined as T);
        return null;
      }
      sliceStart = performance.now();
    }
  }
}
