import { isDeepStrictEqual } from 'node:util';
import type { MissPolicy } from '../config/schema.js';
import { VmcError } from '../errors.js';
import type { VmSpec } from '../hypervisor/types.js';
import type { Clock } from '../platform/clock.js';
import type { Logger } from '../platform/logger.js';
import type { Vm } from '../vm/vm.js';
import type { BaseVmRequest, FactoryBase, FactoryStatus } from './base.js';
import { BootSlots } from './boot-slots.js';
import { CachingFactory, type PoolOptions } from './cache.js';
import { type FactoryMetrics, nullPoolSetMetrics, type PoolSetMetrics } from './metrics.js';
import { ROUTE_COST_DEFAULTS, type RouteCosts, route, type Shape } from './pool-routing.js';
import { DemandSizer, type DemandSizerOptions, shareBudget, type TargetReason } from './pool-sizing.js';
import { PoolWaits } from './pool-waits.js';

/** One pool of a server: a base of one shape, and the bounds of its size. */
export interface PoolEntry {
  name: string;
  /** Produces the pool's VMs; its `config()` is the pool's shape. */
  base: FactoryBase;
  /** What the base is, for status: template clones or direct boots. */
  kind: 'template' | 'direct';
  min: number;
  max: number;
}

/** Tuning shared by every pool of the set. */
export interface PoolSetOptions {
  /** Per-pool options; `size` is each pool's `min`, `agentGate` follows the pool's kind. */
  pool: Omit<PoolOptions, 'size' | 'agentGate'>;
  /** MiB over all pools' ready and booting VMs (0: no budget). */
  budgetMiB: number;
  /** Costs the router starts from (each pool's measured boot time replaces the cold-boot cost). */
  costs?: RouteCosts;
  /** Sizer tuning (tests shorten the windows); `min` and `max` come from each entry. */
  sizer?: Omit<DemandSizerOptions, 'min' | 'max'>;
}

/** Dependencies of the set. */
export interface PoolSetDeps {
  clock: Clock;
  logger: Logger;
  metrics?: PoolSetMetrics;
  random?: () => number;
}

/** One pool in `status()`: its shape and sizing, and its own counters. */
export interface PoolStatus {
  name: string;
  cpus: number;
  memoryMiB: number;
  kind: PoolEntry['kind'];
  min: number;
  max: number;
  target: number;
  /** Why the target has its value: `fixed` for a pool whose min is its max (Kata's). */
  targetReason: TargetReason | 'fixed' | 'budget';
  /** Requests per second for this shape, and the refill time the sizer uses (null for a fixed pool). */
  ratePerSecond: number | null;
  refillMs: number | null;
  status: FactoryStatus;
}

/** The server's state: the sums over its pools (Kata's view of one pool), and each pool. */
export interface PoolSetStatus extends FactoryStatus {
  pools: PoolStatus[];
  memoryBudgetMiB: number;
}

interface Managed {
  entry: PoolEntry;
  shape: Shape;
  pool: CachingFactory;
  /** Null for a fixed pool (min = max): nothing to size. */
  sizer: DemandSizer | null;
  metrics: FactoryMetrics;
  /** Whether the memory budget cut the sizer's last target. */
  budgetCut: boolean;
}

const sameShape = (a: Shape, b: Shape) => a.cpus === b.cpus && a.memoryMiB === b.memoryMiB;

/**
 * The pools of a cache server, one per VM shape (issue 15), the first one the default (the `[hypervisor.qemu]`
 * shape, which Kata's clients get: they send no shape). A request is served from its exact shape's pool; when
 * that has no VM ready, by the fastest measured way the router finds (pool-routing.ts): a larger shape as is,
 * a smaller one the client grows by hot-plug, or, when neither is ready, a miss of the request's home pool
 * (its exact shape's, else the pool it would be routed to), whose miss policy applies; a `wait` is then also
 * served by a VM that becomes ready in any pool within the router's reach first (pool-waits.ts). Each pool's target
 * follows its demand (pool-sizing.ts: arrivals × refill time, cool-down, idle TTL) and the memory budget cuts
 * the targets by demand; boots of every pool and of `cold` requests share one host-wide set of boot slots.
 */
export class PoolSet {
  readonly #pools: Managed[];
  readonly #opts: PoolSetOptions;
  readonly #clock: Clock;
  readonly #log: Logger;
  readonly #metrics: PoolSetMetrics;
  readonly #slots: BootSlots;
  readonly #coldSlots: BootSlots;
  readonly #waits: PoolWaits;
  #cancelTick: (() => void) | null = null;
  #running = false;

  constructor(entries: PoolEntry[], opts: PoolSetOptions, deps: PoolSetDeps) {
    if (entries.length === 0) throw new RangeError('a pool set needs at least one pool');
    this.#opts = opts;
    this.#clock = deps.clock;
    this.#log = deps.logger.child({ subsystem: 'factory.pools' });
    this.#metrics = deps.metrics ?? nullPoolSetMetrics;
    this.#slots = new BootSlots(Math.max(1, opts.pool.maxParallelBoots));
    this.#coldSlots = new BootSlots(Math.max(1, opts.pool.maxParallelBoots));
    this.#waits = new PoolWaits((shape) => {
      const r = this.#route(shape, 'wait');
      return r && { pool: r.pool.pool, name: r.pool.entry.name, kind: r.kind };
    }, this.#log);
    this.#pools = entries.map((entry) => {
      const spec = entry.base.config();
      const sizer =
        entry.min === entry.max
          ? null
          : new DemandSizer({ ...opts.sizer, min: entry.min, max: entry.max }, deps.clock);
      const metrics = this.#metrics.pool(entry.name);
      const pool = new CachingFactory(
        entry.base,
        { ...opts.pool, size: entry.min, agentGate: entry.kind === 'template' },
        {
          clock: deps.clock,
          logger: deps.logger.child({ pool: entry.name }),
          metrics,
          slots: this.#slots,
          coldSlots: this.#coldSlots,
          random: deps.random,
          onBooted: (ms) => {
            sizer?.onRefill(ms);
            this.#retarget();
          },
          onShelved: () => this.#waits.serve(),
          spareWanted: () => this.#waits.wants((want) => this.#reaches(spec, want)),
        },
      );
      metrics.poolTarget(entry.min);
      return {
        entry,
        shape: { cpus: spec.cpus, memoryMiB: spec.memoryMiB },
        pool,
        sizer,
        metrics,
        budgetCut: false,
      };
    });
  }

  /** The default pool's configuration: what Kata's Config RPC reports. */
  config(): VmSpec {
    return this.#pools[0]!.entry.base.config();
  }

  /** Whether a VM booted from `spec` belongs to one of the pools (re-adoption). */
  accepts(spec: VmSpec): boolean {
    return this.#pools.some((p) => isDeepStrictEqual(p.entry.base.config(), spec));
  }

  /** Starts every pool and the sizing tick. */
  start(): void {
    if (this.#running) return;
    this.#running = true;
    for (const p of this.#pools) p.pool.start();
    this.#retarget();
    this.#tick();
  }

  /** Re-reads the targets now and then, so that an idle pool shrinks (idle TTL) without a request to trigger it. */
  #tick(): void {
    this.#cancelTick = this.#clock.setTimeout(() => {
      this.#retarget();
      if (this.#running) this.#tick();
    }, this.#opts.pool.healthIntervalMs);
  }

  /** Each pool's target: its sizer's (or its fixed size), cut to the memory budget by demand. */
  #retarget(): void {
    if (!this.#running) return;
    const claims = this.#pools.map((p) => ({
      memoryMiB: p.shape.memoryMiB,
      min: p.entry.min,
      desired: p.sizer ? p.sizer.target() : p.entry.min,
    }));
    const targets = shareBudget(claims, this.#opts.budgetMiB);
    this.#pools.forEach((p, i) => {
      const t = targets[i]!;
      p.budgetCut = t < claims[i]!.desired;
      if (t !== p.pool.target) {
        p.pool.setTarget(t);
        p.metrics.poolTarget(t);
      }
    });
  }

  /**
   * A paused VM for a request of `want.shape` (default: the default pool's). See the class comment for the
   * order; the VM may be smaller than asked (the client's composer grows it) or larger (used as is).
   */
  async getBaseVM(_signal?: AbortSignal, want: BaseVmRequest = {}): Promise<Vm> {
    if (!this.#running) throw new VmcError('VMC_ERR_CACHE_CLOSED', 'VM cache is not running');
    const t0 = this.#clock.monotonic();
    const shape = want.shape ?? this.#pools[0]!.shape;
    const limits = this.#pools[0]!.entry.base.config();
    // Every pool shares the hot-plug maxima (config/pools.ts): a shape above them no VM here can become. Refused
    // before anything is taken, rather than handing out a VM that the client then fails to grow.
    if (shape.cpus > limits.maxCpus || shape.memoryMiB > limits.maxMemoryMiB)
      throw new VmcError(
        'VMC_ERR_CONFIG_INVALID',
        `shape ${shape.cpus} vCPU/${shape.memoryMiB} MiB is above the cache's hot-plug limits (${limits.maxCpus} vCPUs, ${limits.maxMemoryMiB} MiB: [hypervisor.qemu] default_maxvcpus, default_maxmemory)`,
      );
    const policy: MissPolicy = want.missPolicy ?? 'wait';
    const exact = this.#pools.find((p) => sameShape(p.shape, shape));
    exact?.sizer?.onArrival();
    this.#retarget();
    const home = exact ?? this.#homeFor(shape);
    // A pool can lose its last ready VM to a concurrent request between the route and the take: route again.
    for (let attempt = 0; attempt <= this.#pools.length; attempt++) {
      const r = this.#route(shape, policy, home);
      if (!r) break;
      const vm = await r.pool.pool.tryTake();
      if (vm) {
        this.#metrics.route(r.kind);
        if (r.kind !== 'exact')
          this.#log.info({ vmId: vm.id, pool: r.pool.entry.name, kind: r.kind }, r.reason);
        return vm;
      }
    }
    this.#metrics.route('miss');
    return policy === 'wait' ? this.#waits.wait(home.pool, shape, t0) : home.pool.miss(policy, t0);
  }

  /**
   * The pool to take a ready VM from, or null for a miss. Under `cold`, a cold boot from the home pool wins
   * when the router measures it faster than a ready VM grown; under `wait` and `fail` any ready VM within
   * the router's bounds beats a miss (a slow grow beats waiting for a boot, or an error).
   */
  #route(shape: Shape, policy: MissPolicy, home?: Managed) {
    const views = this.#views((p) => p.pool.ready);
    const costs = { ...(this.#opts.costs ?? ROUTE_COST_DEFAULTS) };
    const homeBoot = home?.pool.bootMs ?? null;
    if (homeBoot !== null) costs.coldBootMs = homeBoot;
    if (policy !== 'cold') costs.coldBootMs = Number.POSITIVE_INFINITY;
    const r = route(shape, views, costs);
    if (r.kind === 'cold') return null;
    return { kind: r.kind, reason: r.reason, pool: this.#pools.find((p) => p.entry.name === r.pool)! };
  }

  /** The pools as the router sees them, with `ready` VMs each and their hot-plug headroom. */
  #views(ready: (p: Managed) => number) {
    return this.#pools.map((p) => {
      const spec = p.entry.base.config();
      return {
        id: p.entry.name,
        shape: p.shape,
        ready: ready(p),
        maxCpus: spec.maxCpus,
        maxMemoryMiB: spec.maxMemoryMiB,
      };
    });
  }

  /** Whether a VM of `spec`'s shape can serve a request of `want` (as is, or grown within its limits). */
  #reaches(spec: VmSpec, want: Shape): boolean {
    const view = { id: '', shape: { cpus: spec.cpus, memoryMiB: spec.memoryMiB }, ready: 1 };
    const r = route(want, [{ ...view, maxCpus: spec.maxCpus, maxMemoryMiB: spec.maxMemoryMiB }], {
      ...ROUTE_COST_DEFAULTS,
      coldBootMs: Number.POSITIVE_INFINITY,
    });
    return r.kind !== 'cold';
  }

  /** For a shape without a pool: the pool the router would take from if every pool had a VM; else the default. */
  #homeFor(shape: Shape): Managed {
    const views = this.#views(() => 1);
    const r = route(shape, views, { ...ROUTE_COST_DEFAULTS, coldBootMs: Number.POSITIVE_INFINITY });
    return (r.kind !== 'cold' && this.#pools.find((p) => p.entry.name === r.pool)) || this.#pools[0]!;
  }

  /** See {@link CachingFactory.reportUnready}: whichever pool handed the VM out counts it. */
  reportUnready(vmId: string): boolean {
    return this.#pools.some((p) => p.pool.reportUnready(vmId));
  }

  /**
   * Gives each pool the adopted VMs of its shape (up to its target); returns the rest, for the caller to stop.
   * Called before `start()`.
   */
  adopt(vms: Vm[]): Vm[] {
    let left = vms;
    for (const p of this.#pools) {
      const spec = p.entry.base.config();
      const mine = left.filter((vm) => isDeepStrictEqual(vm.record.spec, spec));
      const refused = p.pool.adopt(mine);
      left = [...left.filter((vm) => !mine.includes(vm)), ...refused];
    }
    return left;
  }

  /**
   * Resolves once every pool has its target ready, or (given `n`) once `n` VMs are ready over all pools;
   * rejects after `timeoutMs` with the reason of the pool that fell short (tests, the bench).
   */
  async waitReady(n?: number, timeoutMs = 300_000): Promise<void> {
    if (n === undefined) {
      await Promise.all(this.#pools.map((p) => p.pool.waitReady(p.pool.target, timeoutMs)));
      return;
    }
    const deadline = this.#clock.monotonic() + timeoutMs;
    for (;;) {
      const ready = this.#pools.reduce((s, p) => s + p.pool.ready, 0);
      if (ready >= n) return;
      if (!this.#running) throw new VmcError('VMC_ERR_CACHE_CLOSED', 'VM cache closed while filling');
      if (this.#clock.monotonic() > deadline)
        throw new VmcError(
          'VMC_ERR_CACHE_TIMEOUT',
          `VM cache has ${ready} of ${n} VMs after ${timeoutMs} ms${this.status().lastError ? `; last boot error: ${this.status().lastError}` : ''}`,
        );
      await this.#clock.sleep(50);
    }
  }

  /** The pool named `name` (tests and the bench look inside one). */
  pool(name: string): CachingFactory | undefined {
    return this.#pools.find((p) => p.entry.name === name)?.pool;
  }

  status(): PoolSetStatus {
    return this.#combine(this.#pools.map((p) => p.pool.status()));
  }

  /** `status()` with each idle VM's run state read from QEMU (see CachingFactory.queryStatus). */
  async queryStatus(timeoutMs = 500): Promise<PoolSetStatus> {
    return this.#combine(await Promise.all(this.#pools.map((p) => p.pool.queryStatus(timeoutMs))));
  }

  #combine(each: FactoryStatus[]): PoolSetStatus {
    const sum = (f: (s: FactoryStatus) => number) => each.reduce((n, s) => n + f(s), 0);
    const failing = each.filter((s) => s.consecutiveFailures > 0);
    const weighted = (f: (s: FactoryStatus) => number | null) => {
      const known = each.filter((s) => f(s) !== null);
      return known.length ? known.reduce((n, s) => n + f(s)!, 0) / known.length : null;
    };
    return {
      target: sum((s) => s.target),
      idle: each.flatMap((s) => s.idle),
      booting: sum((s) => s.booting),
      hits: sum((s) => s.hits),
      misses: sum((s) => s.misses),
      missesByPolicy: {
        wait: sum((s) => s.missesByPolicy.wait),
        fail: sum((s) => s.missesByPolicy.fail),
        cold: sum((s) => s.missesByPolicy.cold),
      },
      coldBooting: sum((s) => s.coldBooting),
      handoutDiscards: {
        qemu: sum((s) => s.handoutDiscards.qemu),
        agent: sum((s) => s.handoutDiscards.agent),
      },
      evicted: {
        dead: sum((s) => s.evicted.dead),
        age: sum((s) => s.evicted.age),
        shrink: sum((s) => s.evicted.shrink),
      },
      bootMs: weighted((s) => s.bootMs),
      acquireMs: weighted((s) => s.acquireMs),
      bootFailures: sum((s) => s.bootFailures),
      consecutiveFailures: Math.max(0, ...each.map((s) => s.consecutiveFailures)),
      lastError: failing[0]?.lastError ?? null,
      nextRetryAt: failing.length
        ? Math.min(...failing.map((s) => s.nextRetryAt ?? Number.POSITIVE_INFINITY))
        : null,
      memoryBudgetMiB: this.#opts.budgetMiB,
      pools: this.#pools.map((p, i) => {
        const snap = p.sizer?.snapshot();
        return {
          name: p.entry.name,
          cpus: p.shape.cpus,
          memoryMiB: p.shape.memoryMiB,
          kind: p.entry.kind,
          min: p.entry.min,
          max: p.entry.max,
          target: each[i]!.target,
          targetReason: p.budgetCut ? 'budget' : (snap?.reason ?? 'fixed'),
          ratePerSecond: snap?.ratePerSecond ?? null,
          refillMs: snap?.refillMs ?? null,
          status: each[i]!,
        };
      }),
    };
  }

  /** Stops the tick and closes every pool (their bases too). Idempotent. */
  async close(): Promise<void> {
    this.#running = false;
    this.#cancelTick?.();
    this.#cancelTick = null;
    await Promise.all(this.#pools.map((p) => p.pool.close()));
  }
}
