import { VmcError } from '../errors.js';

interface Queued {
  grant: (release: () => void) => void;
  fail: (e: Error) => void;
}

/**
 * A bound on boots at once, shared by every pool of a server (one set for refills, one for `cold` requests):
 * QEMU boots under TCG are CPU-bound, so two at once on 2 cores each take twice as long and ten at once ten
 * times as long; a queue finishes the first boots sooner and takes no memory for the others meanwhile.
 * Hand-written: a FIFO counting semaphore whose waits an AbortSignal ends is a few lines.
 */
export class BootSlots {
  readonly limit: number;
  #inUse = 0;
  readonly #queue: Queued[] = [];

  constructor(limit: number) {
    if (!(Number.isInteger(limit) && limit >= 1))
      throw new RangeError(`boot slots must be ≥ 1, got ${limit}`);
    this.limit = limit;
  }

  /** Boots holding a slot now, and boots waiting for one. */
  get running(): number {
    return this.#inUse;
  }
  get waiting(): number {
    return this.#queue.length;
  }

  /** Resolves with the slot's release (call it once the boot is over, however it ended); `signal` gives up. */
  acquire(signal?: AbortSignal): Promise<() => void> {
    if (signal?.aborted) return Promise.reject(closed());
    if (this.#inUse < this.limit) {
      this.#inUse++;
      return Promise.resolve(this.#release());
    }
    return new Promise((resolve, reject) => {
      const q: Queued = { grant: resolve, fail: reject };
      this.#queue.push(q);
      signal?.addEventListener(
        'abort',
        () => {
          const i = this.#queue.indexOf(q);
          if (i >= 0) {
            this.#queue.splice(i, 1);
            q.fail(closed());
          }
        },
        { once: true },
      );
    });
  }

  #release(): () => void {
    let done = false;
    return () => {
      if (done) return;
      done = true;
      const next = this.#queue.shift();
      if (next) next.grant(this.#release());
      else this.#inUse--;
    };
  }
}

function closed(): VmcError {
  return new VmcError('VMC_ERR_CACHE_CLOSED', 'VM cache closed while a boot waited for its turn');
}
