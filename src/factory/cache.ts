import type { MissPolicy } from '../config/schema.js';
import { isVmcError, messageOf, VmcError } from '../errors.js';
import type { VmSpec } from '../hypervisor/types.js';
import type { Clock } from '../platform/clock.js';
import type { Logger } from '../platform/logger.js';
import { markPooled } from '../vm/record.js';
import type { Vm } from '../vm/vm.js';
import type { BaseVmRequest, EvictReason, FactoryBase, FactoryStatus } from './base.js';
import { BootSlots } from './boot-slots.js';
import { type FactoryMetrics, nullMetrics } from './metrics.js';
import { jitteredMaxAge, SampleEwma } from './pool-sizing.js';
import { agentGate, runState } from './vm-checks.js';
import { WaitQueue, type WaitTicket } from './wait-queue.js';

/** Pool tuning. */
export interface PoolOptions {
  /** VMs kept ready at first (vm_cache_number); {@link CachingFactory.setTarget} changes it. */
  size: number;
  /**
   * This pool's boots in flight at once (queued for a slot or running) while filling: more than the cores only
   * makes each boot slower. The host-wide bound is {@link PoolDeps.slots}.
   */
  maxParallelBoots: number;
  /** An idle VM older than this, ±10 % per VM (so a pool filled at once does not expire at once), is replaced (0: never). */
  maxAgeMs: number;
  /** Period of the liveness check of idle VMs. */
  healthIntervalMs: number;
  /** How long `getBaseVM` waits on an empty pool. */
  acquireTimeoutMs: number;
  /** Backoff after a failed boot: initial delay, doubled per consecutive failure, capped. */
  retryInitialMs: number;
  retryMaxMs: number;
  /**
   * Readiness gate before a VM enters the pool: resume it, wait for its agent's handshake, park it again. For
   * bases whose VMs come up paused without their agent ever having answered: template clones (a direct boot
   * has waited for the handshake already). Costs a park per VM (~0.3 s for the guest to see its host leave),
   * off the request path; a clone that fails it counts as a failed boot and never enters the pool.
   */
  agentGate?: boolean;
}

/** How many handed-out VM ids are remembered, so that a client's report of one is counted once (and only ours). */
const HANDED_OUT_REMEMBERED = 256;

/** Dependencies of the pool. */
export interface PoolDeps {
  clock: Clock;
  logger: Logger;
  metrics?: FactoryMetrics;
  /** Boot slots of refills, shared with the server's other pools; default: this pool's own. */
  slots?: BootSlots;
  /**
   * Boot slots of `cold` requests, shared likewise; default: this pool's own. Apart from the refills' so that a
   * cold request does not queue behind the pool's refills (a `wait` would get that VM sooner), yet a burst of
   * cold requests boots a bounded number at once.
   */
  coldSlots?: BootSlots;
  /** Source of the max-age jitter (0 ≤ r < 1); default Math.random. */
  random?: () => number;
  /** Told each VM that became ready, with ms from asking for it (queueing included): the demand sizer's refill time. */
  onBooted?: (ms: number) => void;
  /**
   * Told when a booted VM entered the ready list with none of this pool's waiters to take it: a server of several
   * pools serves its other pools' waiters from it (pool-set.ts).
   */
  onShelved?: () => void;
  /**
   * Asked when a boot completes with no waiter here and the pool already at its target: true keeps the VM (the
   * server has waiters elsewhere that it can serve), false stops it (`shrink`). Default: false.
   */
  spareWanted?: () => boolean;
}

interface Entry {
  vm: Vm;
  readyAt: number;
  /** This VM's own max age (jittered), ms; 0: never. */
  maxAgeMs: number;
}

/** Pool life cycle. */
type PoolState = 'new' | 'running' | 'closing' | 'closed';

/**
 * The VM cache (Kata's `cache` factory, fixed): keeps `size` paused VMs from `base` ready.
 *
 * - A failed boot never closes the cache (Kata's did): it is counted, reported in `status()`, and retried with
 *   exponential backoff while the rest of the pool keeps serving.
 * - Idle VMs are checked every `healthIntervalMs`: dead or unresponsive ones, and ones older than `maxAgeMs`,
 *   are stopped and replaced. A VM is checked again right before it is handed out, so a dead one never is.
 * - A VM handed out never comes back. On an empty pool, `getBaseVM` applies the request's miss policy: `wait` up
 *   to `acquireTimeoutMs` (the default), `fail` at once (VMC_ERR_CACHE_MISS), or `cold`: one boot from the
 *   same base for this request alone, outside the pool's size and its refills' boot slots (the request asked
 *   to pay for it; cold boots have slots of their own, so a burst of them is bounded too), handed over as a
 *   pool VM is.
 * - Its size is a target that {@link setTarget} moves (the server's demand sizer, pool-set.ts); an idle VM's
 *   max age is jittered ±10 % so that a pool filled at once does not expire at once.
 * - The agent of a paused VM cannot answer, so the agent part of the hand-out check is the client's, right
 *   after its resume (remote-cache.ts); it reports a VM that failed there, and {@link reportUnready} counts it.
 */
export class CachingFactory implements FactoryBase {
  readonly #base: FactoryBase;
  readonly #opts: PoolOptions;
  readonly #clock: Clock;
  readonly #log: Logger;
  readonly #metrics: FactoryMetrics;
  readonly #slots: BootSlots;
  readonly #coldSlots: BootSlots;
  readonly #random: () => number;
  readonly #onBooted: (ms: number) => void;
  readonly #onShelved: () => void;
  readonly #spareWanted: () => boolean;
  #target: number;
  #state: PoolState = 'new';
  readonly #ready: Entry[] = [];
  #booting = 0;
  readonly #waiters: WaitQueue;
  #hits = 0;
  readonly #misses: Record<MissPolicy, number> = { wait: 0, fail: 0, cold: 0 };
  #coldBooting = 0;
  readonly #handoutDiscards = { qemu: 0, agent: 0 };
  readonly #evicted: Record<EvictReason, number> = { dead: 0, age: 0, shrink: 0 };
  readonly #bootMs = new SampleEwma(0, 0.25);
  readonly #acquireMs = new SampleEwma(0, 0.25);
  /** Ids handed out lately, oldest first (bounded): see {@link reportUnready}. */
  readonly #handedOut = new Set<string>();
  #bootFailures = 0;
  #consecutiveFailures = 0;
  #lastError: string | null = null;
  #nextRetryAt = 0;
  #cancelRetry: (() => void) | null = null;
  #cancelHealth: (() => void) | null = null;
  readonly #inflight = new Set<Promise<void>>();
  readonly #abort = new AbortController();

  constructor(base: FactoryBase, opts: PoolOptions, deps: PoolDeps) {
    this.#base = base;
    this.#opts = opts;
    this.#clock = deps.clock;
    this.#log = deps.logger.child({ subsystem: 'factory.cache' });
    this.#metrics = deps.metrics ?? nullMetrics;
    this.#slots = deps.slots ?? new BootSlots(Math.max(1, opts.maxParallelBoots));
    this.#coldSlots = deps.coldSlots ?? new BootSlots(Math.max(1, opts.maxParallelBoots));
    this.#random = deps.random ?? Math.random;
    this.#onBooted = deps.onBooted ?? (() => {});
    this.#onShelved = deps.onShelved ?? (() => {});
    this.#spareWanted = deps.spareWanted ?? (() => false);
    this.#target = opts.size;
    this.#waiters = new WaitQueue(deps.clock, opts.acquireTimeoutMs, () => this.#metrics.acquireTimeout());
  }

  /** Starts filling the pool and the health checks. */
  start(): void {
    if (this.#state !== 'new') return;
    this.#state = 'running';
    this.#fill();
    this.#scheduleHealth();
  }

  config(): VmSpec {
    return this.#base.config();
  }

  /** VMs ready to hand out now. */
  get ready(): number {
    return this.#ready.length;
  }

  /** The mean time a VM took to become ready here (slot queueing included), ms; null before the first. */
  get bootMs(): number | null {
    return this.#bootMs.count ? this.#bootMs.value : null;
  }

  /** What the pool keeps ready now. */
  get target(): number {
    return this.#target;
  }

  /**
   * Changes what the pool keeps ready (the demand sizer's answer). Growing starts boots; shrinking stops the
   * idle VMs beyond it, the oldest first (metric reason `shrink`). Booting VMs are let finish: a VM
   * half-booted is most of its cost spent, and demand may be back by then; one that finishes with the target
   * still below it is stopped then (also `shrink`).
   */
  setTarget(n: number): void {
    if (!(Number.isInteger(n) && n >= 0))
      throw new RangeError(`pool target must be a whole number, got ${n}`);
    if (n === this.#target) return;
    this.#log.info({ from: this.#target, to: n }, 'pool target changed');
    this.#target = n;
    if (this.#state !== 'running') return;
    this.#trim();
    this.#fill();
  }

  /** Stops the idle VMs beyond the target, the oldest first (`shrink`). */
  #trim(): void {
    const excess = this.#ready.length - this.#target;
    if (excess <= 0) return;
    const byAge = [...this.#ready].sort((a, b) => a.vm.record.createdAt - b.vm.record.createdAt);
    for (const entry of byAge.slice(0, excess)) {
      this.#ready.splice(this.#ready.indexOf(entry), 1);
      this.#discard(entry, 'shrink');
    }
  }

  /** Resolves once `n` VMs are ready (for tests and `factory init --wait`), or rejects after `timeoutMs`. */
  async waitReady(n = this.#target, timeoutMs = 300_000): Promise<void> {
    const deadline = this.#clock.monotonic() + timeoutMs;
    while (this.#ready.length < n) {
      if (this.#state !== 'running')
        throw new VmcError('VMC_ERR_CACHE_CLOSED', 'VM cache closed while filling');
      if (this.#clock.monotonic() > deadline) {
        throw new VmcError(
          'VMC_ERR_CACHE_TIMEOUT',
          `VM cache has ${this.#ready.length} of ${n} VMs after ${timeoutMs} ms${this.#lastError ? `; last boot error: ${this.#lastError}` : ''}`,
        );
      }
      await this.#clock.sleep(50);
    }
  }

  /**
   * A paused VM from the pool; on a miss, `missPolicy` (default `wait`) decides. `_signal` is not used: what
   * a request starts (a cold boot) is aborted by `close`, and the server stops a VM whose requester left.
   */
  async getBaseVM(_signal?: AbortSignal, opts: BaseVmRequest = {}): Promise<Vm> {
    if (this.#state !== 'running') throw new VmcError('VMC_ERR_CACHE_CLOSED', `VM cache is ${this.#state}`);
    const policy = opts.missPolicy ?? 'wait';
    const t0 = this.#clock.monotonic();
    if (this.#ready.length > 0) {
      const hit = await this.tryTake();
      if (hit) return hit;
    }
    return this.miss(policy, t0);
  }

  /**
   * A ready VM that passed the hand-out check (counted as this pool's hit), or null when none is ready. Dead
   * ones found on the way are discarded and counted. `waitedSince` (monotonic ms): the VM serves a request that
   * missed (counted where it missed) and has waited since then; it is not a hit, and its wait is this pool's
   * acquire time.
   */
  async tryTake(waitedSince?: number): Promise<Vm | null> {
    if (this.#state !== 'running') throw new VmcError('VMC_ERR_CACHE_CLOSED', `VM cache is ${this.#state}`);
    const t0 = this.#clock.monotonic();
    while (this.#ready.length > 0) {
      const entry = this.#ready.shift()!; // oldest first: it is the closest to its max age
      this.#report();
      this.#fill();
      if (await this.#healthy(entry)) {
        if (waitedSince === undefined) this.#hits++;
        this.#acquired(waitedSince ?? t0, waitedSince === undefined);
        return this.#handOut(entry.vm);
      }
      this.#handoutDiscards.qemu++;
      this.#metrics.handoutDiscard('qemu');
      this.#discard(entry, 'dead');
    }
    return null;
  }

  #acquired(t0: number, hit: boolean): void {
    const ms = this.#clock.monotonic() - t0;
    this.#acquireMs.add(ms);
    this.#metrics.acquireSeconds(ms / 1000, hit);
  }

  /**
   * A request that found no VM ready (here or, for a server of several pools, anywhere it could be served):
   * counted as this pool's miss, then the policy: `fail` throws VMC_ERR_CACHE_MISS, `cold` boots one, `wait`
   * takes the next boot that completes. `t0`: when the request arrived (monotonic), for the wait's metrics.
   * `ticket`: a `wait` the server may serve elsewhere (see {@link WaitTicket}); withdrawn, it rejects with
   * VMC_ERR_CACHE_CLOSED, which that server ignores.
   */
  async miss(policy: MissPolicy, t0 = this.#clock.monotonic(), ticket?: WaitTicket): Promise<Vm> {
    if (this.#state !== 'running') throw new VmcError('VMC_ERR_CACHE_CLOSED', `VM cache is ${this.#state}`);
    this.#misses[policy]++;
    this.#metrics.miss(policy);
    if (policy === 'fail') {
      throw new VmcError('VMC_ERR_CACHE_MISS', `no VM ready in the cache (miss policy fail)${this.#why()}`);
    }
    const vm = policy === 'cold' ? await this.#bootCold() : await this.#wait(ticket);
    this.#acquired(t0, false);
    return this.#handOut(vm);
  }

  /**
   * Counts a VM this pool handed out and a client then discarded because its agent did not answer right after
   * resume. Only an id handed out lately, and each once: a client cannot inflate the count. Returns whether
   * it counted.
   */
  reportUnready(vmId: string): boolean {
    if (!this.#handedOut.delete(vmId)) return false;
    this.#handoutDiscards.agent++;
    this.#metrics.handoutDiscard('agent');
    this.#log.warn({ vmId }, 'a client discarded a VM from the cache: its agent did not answer after resume');
    return true;
  }

  #handOut(vm: Vm): Vm {
    this.#handedOut.add(vm.id);
    if (this.#handedOut.size > HANDED_OUT_REMEMBERED)
      this.#handedOut.delete(this.#handedOut.values().next().value!);
    return vm;
  }

  /** Why no VM is ready, for the miss errors. */
  #why(): string {
    return this.#lastError
      ? `; boots are failing (${this.#consecutiveFailures} in a row), last error: ${this.#lastError}`
      : `; ${this.#booting} boot(s) in progress`;
  }

  /**
   * Policy `wait`: the next boot that completes serves this request, unless `acquireTimeoutMs` passes first or
   * the ticket is withdrawn.
   */
  #wait(ticket?: WaitTicket): Promise<Vm> {
    const vm = this.#waiters.add(() => this.#why(), ticket);
    this.#fill();
    return vm;
  }

  /**
   * Policy `cold`: boots one VM from the base for this request (no entry gate: the client's check at resume
   * covers it, and the request should not pay for a park). A failure is this request's error, not the pool's:
   * no backoff. `close` aborts it and waits for it.
   */
  #bootCold(): Promise<Vm> {
    this.#coldBooting++;
    const t0 = this.#clock.monotonic();
    const boot = (async () => {
      let release = () => {};
      try {
        release = await this.#coldSlots.acquire(this.#abort.signal);
        const vm = await this.#base.getBaseVM(this.#abort.signal);
        if (this.#state !== 'running') {
          await vm.destroy().catch(() => undefined);
          throw new VmcError('VMC_ERR_CACHE_CLOSED', 'VM cache closed during a cold boot');
        }
        this.#log.info(
          { vmId: vm.id, ms: Math.round(this.#clock.monotonic() - t0) },
          'VM booted cold for a request (miss policy cold)',
        );
        return vm;
      } catch (err) {
        if (this.#state !== 'running' && !isVmcError(err, 'VMC_ERR_CACHE_CLOSED'))
          throw new VmcError('VMC_ERR_CACHE_CLOSED', 'VM cache closed during a cold boot', { cause: err });
        throw err;
      } finally {
        release();
        this.#coldBooting--;
      }
    })();
    const settled = boot.then(
      () => undefined,
      () => undefined,
    );
    this.#inflight.add(settled);
    void settled.finally(() => this.#inflight.delete(settled));
    return boot;
  }

  status(): FactoryStatus {
    const now = this.#clock.now();
    return {
      target: this.#target,
      idle: this.#ready.map(({ vm }) => ({
        id: vm.id,
        pid: vm.record.qemu.pid,
        cpus: vm.record.spec.cpus,
        memoryMiB: vm.record.spec.memoryMiB,
        ageMs: now - vm.record.createdAt,
        // What every base hands over (FactoryBase) and the health check keeps; `queryStatus` reads it from QEMU.
        state: 'paused',
      })),
      booting: this.#booting,
      hits: this.#hits,
      misses: this.#misses.wait + this.#misses.fail + this.#misses.cold,
      missesByPolicy: { ...this.#misses },
      coldBooting: this.#coldBooting,
      handoutDiscards: { ...this.#handoutDiscards },
      evicted: { ...this.#evicted },
      bootMs: this.#bootMs.count ? this.#bootMs.value : null,
      acquireMs: this.#acquireMs.count ? this.#acquireMs.value : null,
      bootFailures: this.#bootFailures,
      consecutiveFailures: this.#consecutiveFailures,
      lastError: this.#lastError,
      nextRetryAt: this.#consecutiveFailures > 0 ? this.#nextRetryAt : null,
    };
  }

  /**
   * `status()`, with each idle VM's run state read from QEMU now (in parallel, each bounded by `timeoutMs`):
   * `dead` when its process is gone, `unknown` when QMP does not answer. A VM handed out meanwhile is left out.
   */
  async queryStatus(timeoutMs = 500): Promise<FactoryStatus> {
    const s = this.status();
    const vms = new Map(this.#ready.map((e) => [e.vm.id, e.vm]));
    await Promise.all(
      s.idle.map(async (v) => {
        v.state = await runState(vms.get(v.id)!, timeoutMs);
      }),
    );
    const idle = new Set(this.#ready.map((e) => e.vm.id));
    return { ...s, idle: s.idle.filter((v) => idle.has(v.id)) };
  }

  /**
   * Takes VMs that a dead server's pool had idle, adopted by this process (vm/adopt.ts), into the ready list, up
   * to the pool size; returns those it did not take (the caller stops them). Called before `start()`, so that
   * the fill boots only what is still missing.
   */
  adopt(vms: Vm[]): Vm[] {
    const room = Math.max(0, this.#target - this.#ready.length);
    for (const vm of vms.slice(0, room)) this.#shelve(vm);
    this.#report();
    return vms.slice(room);
  }

  /** Puts a VM into the ready list, marked on disk as idle in this pool: what a successor may adopt. */
  #shelve(vm: Vm): void {
    try {
      markPooled(vm.record);
    } catch (err) {
      // Only adoption after a crash depends on the mark: without it the VM would be reaped instead.
      this.#log.warn({ vmId: vm.id, err: messageOf(err) }, 'could not mark the VM idle in its record');
    }
    this.#ready.push({
      vm,
      readyAt: this.#clock.now(),
      maxAgeMs: jitteredMaxAge(this.#opts.maxAgeMs, this.#random),
    });
  }

  /** Stops filling, fails waiters, stops every idle VM and every VM still booting. Idempotent. */
  async close(): Promise<void> {
    if (this.#state === 'closed' || this.#state === 'closing') return;
    this.#state = 'closing';
    this.#abort.abort();
    this.#cancelRetry?.();
    this.#cancelHealth?.();
    this.#waiters.rejectAll(new VmcError('VMC_ERR_CACHE_CLOSED', 'VM cache closed'));
    const idle = this.#ready.splice(0);
    await Promise.all([...idle.map((e) => e.vm.destroy().catch(() => undefined)), ...this.#inflight]);
    await this.#base.close();
    this.#state = 'closed';
    this.#report();
  }

  #report(): void {
    this.#metrics.poolSize(this.#ready.length, this.#booting);
  }

  /** Starts boots until the pool (ready + booting) is full, within the parallelism bound and the backoff. */
  #fill(): void {
    if (this.#state !== 'running') return;
    const now = this.#clock.now();
    if (now < this.#nextRetryAt) {
      if (!this.#cancelRetry) {
        this.#cancelRetry = this.#clock.setTimeout(() => {
          this.#cancelRetry = null;
          this.#fill();
        }, this.#nextRetryAt - now);
      }
      return;
    }
    // Waiters count as demand beyond the pool size: each is served by the next boot that completes.
    const wanted = this.#target + this.#waiters.length;
    while (this.#ready.length + this.#booting < wanted && this.#booting < this.#opts.maxParallelBoots) {
      this.#bootOne();
    }
  }

  #bootOne(): void {
    this.#booting++;
    this.#report();
    const t0 = this.#clock.monotonic();
    let release = () => {};
    const p = this.#slots
      .acquire(this.#abort.signal)
      .then((r) => {
        release = r;
        return this.#base.getBaseVM(this.#abort.signal);
      })
      .then((vm) => (this.#opts.agentGate ? agentGate(vm) : vm))
      .then(
        async (vm) => {
          release();
          this.#booting--;
          this.#consecutiveFailures = 0;
          this.#lastError = null;
          const ms = this.#clock.monotonic() - t0;
          this.#bootMs.add(ms);
          this.#metrics.bootSeconds(ms / 1000);
          if (this.#state !== 'running') {
            await vm.destroy().catch(() => undefined);
            return;
          }
          this.#log.info(
            { vmId: vm.id, ms: Math.round(this.#clock.monotonic() - t0) },
            'VM ready in the cache',
          );
          // A `wait` miss served by this boot is counted as its miss (in `miss`), not as a hit too.
          let shelved = false;
          if (!this.#waiters.serve(vm)) {
            if (this.#ready.length >= this.#target && !this.#spareWanted()) {
              // The target fell while it booted (or the waiter it was for gave up or was served elsewhere)
              // and has not come back up: no room for it. Kept, it would stay above the target (and the
              // memory budget) until its max age.
              this.#discard({ vm, readyAt: this.#clock.now(), maxAgeMs: 0 }, 'shrink');
            } else {
              this.#shelve(vm);
              shelved = true;
            }
          }
          this.#onBooted(ms);
          if (shelved) this.#onShelved();
        },
        (err: unknown) => {
          release();
          this.#booting--;
          if (this.#state !== 'running') return;
          this.#bootFailures++;
          this.#consecutiveFailures++;
          this.#lastError = messageOf(err).split('\n')[0]!;
          const delay = Math.min(
            this.#opts.retryMaxMs,
            this.#opts.retryInitialMs * 2 ** (this.#consecutiveFailures - 1),
          );
          this.#nextRetryAt = this.#clock.now() + delay;
          this.#metrics.bootFailure();
          this.#log.warn(
            { err: messageOf(err), consecutive: this.#consecutiveFailures, retryInMs: delay },
            'VM boot for the cache failed; retrying',
          );
        },
      )
      .finally(() => {
        this.#inflight.delete(p);
        this.#report();
        this.#fill();
      });
    this.#inflight.add(p);
  }

  /** Cheap liveness check: the process is alive and QEMU answers QMP (the VM is paused, so the agent cannot). */
  async #healthy(entry: Entry): Promise<boolean> {
    return (await runState(entry.vm, 2_000)) === 'paused';
  }

  #discard(entry: Entry, reason: EvictReason): void {
    this.#evicted[reason]++;
    if (reason === 'shrink') this.#log.info({ vmId: entry.vm.id }, 'stopping an idle VM: the pool shrank');
    else this.#log.warn({ vmId: entry.vm.id, reason }, 'replacing idle VM');
    this.#metrics.replaced(reason);
    const p = entry.vm.destroy().catch(() => undefined);
    this.#inflight.add(p);
    void p.finally(() => this.#inflight.delete(p));
    this.#report();
  }

  #scheduleHealth(): void {
    this.#cancelHealth = this.#clock.setTimeout(() => {
      void this.#checkIdle().finally(() => {
        if (this.#state === 'running') this.#scheduleHealth();
      });
    }, this.#opts.healthIntervalMs);
  }

  async #checkIdle(): Promise<void> {
    const now = this.#clock.now();
    for (const entry of [...this.#ready]) {
      const old = entry.maxAgeMs > 0 && now - entry.vm.record.createdAt > entry.maxAgeMs;
      const healthy = !old && (await this.#healthy(entry));
      if (old || !healthy) {
        const i = this.#ready.indexOf(entry);
        if (i < 0) continue; // handed out meanwhile
        this.#ready.splice(i, 1);
        this.#discard(entry, old ? 'age' : 'dead');
      }
    }
    // A spare kept for another pool's waiter (PoolDeps.spareWanted) that none took: back to the target.
    if (!this.#spareWanted()) this.#trim();
    this.#fill();
  }
}
