/** Time, injected so that timeouts, backoff and ages can be tested with a manual clock. */
export interface Clock {
  /** Wall-clock milliseconds since the epoch. */
  now(): number;
  /** Monotonic milliseconds, for measuring durations. */
  monotonic(): number;
  /** Resolves after `ms`, or rejects with the signal's reason when aborted. */
  sleep(ms: number, signal?: AbortSignal): Promise<void>;
  /** Runs `fn` after `ms`; returns a canceller. */
  setTimeout(fn: () => void, ms: number): () => void;
}

/** The real clock. */
export const systemClock: Clock = {
  now: () => Date.now(),
  monotonic: () => performance.now(),
  sleep: (ms, signal) =>
    new Promise<void>((resolve, reject) => {
      if (signal?.aborted) return reject(signal.reason);
      const t = setTimeout(() => {
        signal?.removeEventListener('abort', onAbort);
        resolve();
      }, ms);
      const onAbort = () => {
        clearTimeout(t);
        reject(signal?.reason);
      };
      signal?.addEventListener('abort', onAbort, { once: true });
    }),
  setTimeout: (fn, ms) => {
    const t = setTimeout(fn, ms);
    return () => clearTimeout(t);
  },
};

/** Waits for `p` (its outcome ignored) at most `ms` on `clock`; true when it settled in time. */
export async function waitAtMost(p: Promise<unknown>, ms: number, clock: Clock): Promise<boolean> {
  let cancel = () => {};
  const settled = p.then(
    () => true,
    () => true,
  );
  const late = new Promise<boolean>((r) => {
    cancel = clock.setTimeout(() => r(false), ms);
  });
  const inTime = await Promise.race([settled, late]);
  cancel();
  return inTime;
}
