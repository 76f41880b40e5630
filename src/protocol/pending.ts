import type { Clock } from '../platform/clock.js';

/** A request taken out of the table by its reply, to be settled by the caller. */
export interface PendingRequest<M> {
  /** What the client recorded with the request (its command name, how to adopt the result). */
  readonly meta: M;
  resolve(value: unknown): void;
  reject(err: Error): void;
}

interface Entry<M> extends PendingRequest<M> {
  cancelTimer: () => void;
}

/**
 * The requests a client sent on one connection and that wait for their replies, by id (the QMP and the agent
 * client). Each has a deadline: past it, it fails with the error its caller gave and is forgotten, so a late
 * reply finds nothing. Every way out of the table (reply, timeout, rejection, `failAll`) stops the timer.
 */
export class PendingRequests<Id, M> {
  readonly #clock: Clock;
  readonly #entries = new Map<Id, Entry<M>>();

  constructor(clock: Clock) {
    this.#clock = clock;
  }

  /** Registers request `id`; the promise settles with its reply, or with `timeoutError()` after `timeoutMs`. */
  add<T>(id: Id, meta: M, timeoutMs: number, timeoutError: () => Error): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const cancelTimer = this.#clock.setTimeout(() => {
        this.#entries.delete(id);
        reject(timeoutError());
      }, timeoutMs);
      this.#entries.set(id, { meta, resolve: resolve as (v: unknown) => void, reject, cancelTimer });
    });
  }

  /**
   * Removes request `id` and stops its timer; returns it for the caller to settle, or undefined when there is
   * none (it timed out, or the id was never sent).
   */
  take(id: Id): PendingRequest<M> | undefined {
    const e = this.#entries.get(id);
    if (!e) return undefined;
    this.#entries.delete(id);
    e.cancelTimer();
    return e;
  }

  /** Fails every request with `err` (the connection closed) and empties the table. */
  failAll(err: Error): void {
    const all = [...this.#entries.values()];
    this.#entries.clear();
    for (const e of all) {
      e.cancelTimer();
      e.reject(err);
    }
  }

  /** Number of requests waiting. */
  get size(): number {
    return this.#entries.size;
  }
}
