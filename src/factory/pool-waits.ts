import type { Logger } from '../platform/logger.js';
import type { Vm } from '../vm/vm.js';
import type { CachingFactory } from './cache.js';
import type { Shape } from './pool-routing.js';
import type { WaitTicket } from './wait-queue.js';

/** Where a waiting request of `shape` can be served now, as the router sees the ready VMs; null: nowhere yet. */
export type ReadyRoute = (shape: Shape) => { pool: CachingFactory; name: string; kind: string } | null;

interface Pending {
  shape: Shape;
  /** When the request arrived (monotonic ms). */
  t0: number;
  /** A take from another pool is under way: the home pool's boots pass this waiter by. */
  taking: boolean;
  /** Served (here or at home), or failed: nothing more happens for it. */
  settled: boolean;
  withdraw: AbortController;
  resolve: (vm: Vm) => void;
  reject: (e: unknown) => void;
}

/**
 * The `wait` misses of a server of several pools (issue 15). A waiting request queues in its home pool, whose
 * next boot serves it as in a single pool; and any VM that becomes ready in another pool within the router's
 * reach (a larger shape as is, a smaller one the client grows) serves it too, whichever comes first. Under one
 * boot slot (TCG on 2 cores) this is what lets per-shape pools wait no longer than one pool does: every boot
 * serves the oldest request it can, not only the requests of its own shape.
 *
 * Oldest request first, and a pool's boot goes to its own waiters first (exact shapes first); a request served
 * elsewhere is withdrawn from its home queue, so that queue's demand for a boot goes with it.
 */
export class PoolWaits {
  readonly #pending: Pending[] = [];

  constructor(
    private readonly routeReady: ReadyRoute,
    private readonly log: Logger,
  ) {}

  /** Whether some request waits that a VM of `shape` could serve (a spare then stays: PoolDeps.spareWanted). */
  wants(canServe: (want: Shape) => boolean): boolean {
    return this.#pending.some((w) => !w.settled && !w.taking && canServe(w.shape));
  }

  /**
   * Waits for a VM of `shape`: from `home`'s next boot, or from any pool where one becomes ready first. Rejects
   * as the home pool's wait does (its deadline, its closing).
   */
  wait(home: CachingFactory, shape: Shape, t0: number): Promise<Vm> {
    return new Promise<Vm>((resolve, reject) => {
      const w: Pending = {
        shape,
        t0,
        taking: false,
        settled: false,
        withdraw: new AbortController(),
        resolve,
        reject,
      };
      const ticket: WaitTicket = {
        claim: () => {
          if (w.taking || w.settled) return false;
          w.settled = true;
          return true;
        },
        signal: w.withdraw.signal,
      };
      this.#pending.push(w);
      home.miss('wait', t0, ticket).then(
        (vm) => {
          this.#drop(w);
          resolve(vm);
        },
        (err: unknown) => {
          // Withdrawn: served elsewhere, and `resolve` has run. Otherwise the home pool's deadline or close.
          if (w.withdraw.signal.aborted) return;
          w.settled = true;
          this.#drop(w);
          reject(err);
        },
      );
    });
  }

  /** Serves the waiting requests, oldest first, that a ready VM can serve now (a pool has just shelved one). */
  serve(): void {
    for (const w of this.#pending) {
      if (w.settled || w.taking) continue;
      const r = this.routeReady(w.shape);
      if (!r) continue;
      w.taking = true;
      // tryTake takes the VM from the ready list before its first await: the next request routes without it.
      r.pool.tryTake(w.t0).then(
        (vm) => this.#took(w, vm, r.name, r.kind),
        (err: unknown) => {
          // Only a closing pool throws; the home pool's close fails the wait itself.
          w.taking = false;
          this.log.debug({ err }, 'taking a VM for a waiting request failed');
        },
      );
    }
  }

  #took(w: Pending, vm: Vm | null, pool: string, kind: string): void {
    w.taking = false;
    if (!vm) {
      // The VM failed its hand-out check: another may be ready.
      this.serve();
      return;
    }
    if (w.settled) {
      // The request's deadline passed during the take (a few ms against a 60 s wait): nobody is left to own it.
      this.log.warn(
        { vmId: vm.id, pool },
        'a waiting request gave up while a VM was taken for it: stopping the VM',
      );
      void vm.destroy().catch(() => undefined);
      return;
    }
    w.settled = true;
    this.#drop(w);
    w.withdraw.abort();
    this.log.info(
      { vmId: vm.id, pool, kind },
      'a waiting request served by a VM that became ready in another pool',
    );
    w.resolve(vm);
  }

  #drop(w: Pending): void {
    const i = this.#pending.indexOf(w);
    if (i >= 0) this.#pending.splice(i, 1);
  }
}
