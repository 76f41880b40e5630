import type { Clock } from '../../src/platform/clock.js';

/** Lets stream callbacks and promise continuations run (in-memory pairs deliver asynchronously). */
export async function settle(): Promise<void> {
  for (let i = 0; i < 10; i++) await new Promise((r) => setImmediate(r));
}

/** A clock that only moves when told to; timers due on the way fire in order, with I/O settling between. */
export class ManualClock implements Clock {
  #t = 0;
  #seq = 0;
  readonly #timers = new Set<{ at: number; seq: number; fn: () => void }>();
  now(): number {
    return 1_700_000_000_000 + this.#t;
  }
  monotonic(): number {
    return this.#t;
  }
  /** As `systemClock.sleep`: rejects with the signal's reason when aborted, and then leaves no timer behind. */
  sleep(ms: number, signal?: AbortSignal): Promise<void> {
    return new Promise((resolve, reject) => {
      if (signal?.aborted) return reject(signal.reason);
      const onAbort = () => {
        cancel();
        reject(signal?.reason);
      };
      const cancel = this.setTimeout(() => {
        signal?.removeEventListener('abort', onAbort);
        resolve();
      }, ms);
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }
  setTimeout(fn: () => void, ms: number): () => void {
    const timer = { at: this.#t + ms, seq: this.#seq++, fn };
    this.#timers.add(timer);
    return () => this.#timers.delete(timer);
  }
  /** Timers not yet fired nor cancelled (a test can check that nothing is left scheduled). */
  get pending(): number {
    return this.#timers.size;
  }
  /** Moves time forward by `ms`, firing every timer due by then in order of due time, then of creation. */
  async advance(ms: number): Promise<void> {
    const end = this.#t + ms;
    for (;;) {
      await settle();
      let next: { at: number; seq: number; fn: () => void } | undefined;
      for (const t of this.#timers)
        if (t.at <= end && (!next || t.at < next.at || (t.at === next.at && t.seq < next.seq))) next = t;
      if (!next) break;
      this.#timers.delete(next);
      this.#t = next.at;
      next.fn();
    }
    this.#t = end;
    await settle();
  }
}

/** How a promise ended so far, observed without leaving a rejection unhandled. */
export function observe<T>(p: Promise<T>): {
  state: 'pending' | 'resolved' | 'rejected';
  value?: T;
  error?: unknown;
} {
  const o: { state: 'pending' | 'resolved' | 'rejected'; value?: T; error?: unknown } = { state: 'pending' };
  p.then(
    (value) => Object.assign(o, { state: 'resolved', value }),
    (error: unknown) => Object.assign(o, { state: 'rejected', error }),
  );
  return o;
}

/**
 * Moves `clock` in steps of `stepMs` until `p` settles, within `limitMs` of clock time (failing the test
 * otherwise), and returns it: how a test waits for work that runs on a manual clock.
 */
export async function runOn<T>(
  clock: ManualClock,
  p: Promise<T>,
  limitMs: number,
  stepMs: number,
): Promise<T> {
  const o = observe(p);
  for (let t = 0; o.state === 'pending' && t < limitMs; t += stepMs) await clock.advance(stepMs);
  if (o.state === 'pending') throw new Error(`still pending after ${limitMs} ms of clock time`);
  return p;
}
