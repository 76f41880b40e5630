import { VmcError } from '../errors.js';
import type { Clock } from '../platform/clock.js';
import type { Vm } from '../vm/vm.js';

/**
 * A `wait` miss that a server of several pools may also serve from another pool's VM (pool-waits.ts): the
 * request waits in its home pool's queue, and the server withdraws it once it has served it elsewhere.
 */
export interface WaitTicket {
  /**
   * Asked when a boot of the home pool completes for this waiter: false while the server is taking a VM for it
   * elsewhere or has taken one; the VM then goes to the next waiter or the pool, and this waiter stays queued
   * until withdrawn.
   */
  claim(): boolean;
  /** Aborted once the request is served elsewhere: the waiter leaves the queue (and its demand for a boot). */
  signal: AbortSignal;
}

interface Waiter {
  resolve: (vm: Vm) => void;
  reject: (e: Error) => void;
  cancel: () => void;
  /** See {@link WaitTicket.claim}; absent: always takes the VM. */
  claim?: () => boolean;
}

/**
 * The requests waiting for a pool's next boot (miss policy `wait`), oldest first, each with its deadline: the
 * timer rejects it with VMC_ERR_CACHE_TIMEOUT (the message names `why()`, the pool's state then), a withdrawn
 * ticket with VMC_ERR_CACHE_CLOSED (which the withdrawing server ignores).
 */
export class WaitQueue {
  readonly #waiters: Waiter[] = [];

  constructor(
    private readonly clock: Clock,
    private readonly timeoutMs: number,
    private readonly onTimeout: () => void,
  ) {}

  /** Requests waiting (each counts as demand for a boot). */
  get length(): number {
    return this.#waiters.length;
  }

  /** Waits for {@link serve} to hand a VM over; `why()` explains a timeout. */
  add(why: () => string, ticket?: WaitTicket): Promise<Vm> {
    return new Promise<Vm>((resolve, reject) => {
      const leave = () => {
        const i = this.#waiters.indexOf(waiter);
        if (i >= 0) this.#waiters.splice(i, 1);
      };
      const waiter: Waiter = {
        resolve,
        reject,
        claim: ticket ? () => ticket.claim() : undefined,
        cancel: this.clock.setTimeout(() => {
          leave();
          this.onTimeout();
          reject(
            new VmcError(
              'VMC_ERR_CACHE_TIMEOUT',
              `no VM ready in the cache within ${this.timeoutMs} ms${why()}`,
            ),
          );
        }, this.timeoutMs),
      };
      const withdrawn = () => new VmcError('VMC_ERR_CACHE_CLOSED', 'wait withdrawn: served by another pool');
      if (ticket?.signal.aborted) {
        waiter.cancel();
        reject(withdrawn());
        return;
      }
      ticket?.signal.addEventListener(
        'abort',
        () => {
          leave();
          waiter.cancel();
          reject(withdrawn());
        },
        { once: true },
      );
      this.#waiters.push(waiter);
    });
  }

  /** Gives `vm` to the oldest waiter that takes it now (see {@link WaitTicket.claim}); false if none does. */
  serve(vm: Vm): boolean {
    const i = this.#waiters.findIndex((w) => !w.claim || w.claim());
    if (i < 0) return false;
    const [w] = this.#waiters.splice(i, 1);
    w!.cancel();
    w!.resolve(vm);
    return true;
  }

  /** Fails every waiter with `err` (the pool closes). */
  rejectAll(err: Error): void {
    for (const w of this.#waiters.splice(0)) {
      w.cancel();
      w.reject(err);
    }
  }
}
