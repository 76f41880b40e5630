import type { Clock } from '../platform/clock.js';

/**
 * Demand-driven pool sizing (issue 15): how many ready VMs one pool should keep, from what it measures.
 *
 * A pool is a stock refilled with a lead time: a VM handed out is replaced by a boot that takes `T` (the
 * measured refill time, queueing included). By Little's law the VMs being refilled at any moment are λ·T on
 * average (λ: hand-out requests per second), so a pool of ⌈λ·T⌉ covers the mean demand. A request misses when
 * the VMs still being refilled, i.e. the requests of the last `T`, are ≥ the pool's size; for Poisson arrivals
 * that count is Poisson(λ·T). So the target is the smallest size whose miss probability P(Poisson(λ·T) ≥ size)
 * is at most `missProbability` (5 %): ⌈λ·T⌉ plus the margin the Poisson tail asks for, which for large λ·T is
 * the square-root staffing term 1.65·√(λ·T), and for the small λ·T of one node (0.1–2 under TCG) is one or two
 * VMs. (The normal approximation alone, ⌈λ·T + 1.65·√(λ·T)⌉, keeps one VM at λ·T = 0.1 and misses 10 % there:
 * the simulation showed it.) Then it is clamped to the pool's [min, max].
 */
export interface DemandSizerOptions {
  /** Floor: never fewer ready VMs than this (the operator's `min`). */
  min: number;
  /** Ceiling: never more than this (the operator's `max`). */
  max: number;
  /**
   * Time constant of the arrival-rate average, ms. 60 s: long enough that one burst of 5 does not read as a
   * sustained 5/s, short enough that a real change of load shows within a minute (about 7 refills under TCG).
   */
  windowMs?: number;
  /** Miss probability the size aims at (see above): 0.05. Larger gives smaller pools. */
  missProbability?: number;
  /**
   * The target grows at once but shrinks at most once per this many ms (and not sooner than this after a
   * growth), and then only to the highest size wanted during the last cool-down (as Kubernetes' HPA
   * stabilisation window does), so a load that hovers at a rounding edge, or comes in regular bursts, does not
   * boot and evict the same VM again and again. 120 s: two rate windows, so a shrink reflects a drop the
   * average has settled on.
   */
  cooldownMs?: number;
  /**
   * After this many ms without a request the pool goes back to `min` at once: the decayed rate takes ~20 min
   * to read as no demand at all, and until then the rule keeps one VM for it. 10 min, as warm pools elsewhere (agent-sandbox, kubeswift)
   * default to minutes; an idle VM costs ~270 MiB of host memory (bench: idle paused VM PSS).
   */
  idleTtlMs?: number;
  /** Refill time assumed before the first measurement, ms (e.g. the last bench's cold boot). */
  initialRefillMs?: number;
  /** Weight of a new refill measurement in its moving average (0–1). */
  refillAlpha?: number;
}

/** The defaults of the options above, with the reason for each given there. */
export const SIZER_DEFAULTS = {
  windowMs: 60_000,
  missProbability: 0.05,
  cooldownMs: 120_000,
  idleTtlMs: 600_000,
  initialRefillMs: 8_400, // bench: cold boot to agent-ready p50 under TCG, 8376 ms
  refillAlpha: 0.25, // ~the last 4 boots: boot time moves with host load, which changes over minutes
} as const;

/** An exponentially weighted moving average of samples (boot times, hand-out times, hot-plug costs). */
export class SampleEwma {
  #value: number;
  #n = 0;
  constructor(
    initial: number,
    readonly alpha: number,
  ) {
    this.#value = initial;
  }
  /** Adds a sample; the first one replaces the initial guess outright. */
  add(x: number): void {
    if (!Number.isFinite(x) || x < 0) return;
    this.#value = this.#n === 0 ? x : this.#value + this.alpha * (x - this.#value);
    this.#n++;
  }
  get value(): number {
    return this.#value;
  }
  /** Samples seen. */
  get count(): number {
    return this.#n;
  }
}

/**
 * An event rate averaged with exponential decay in continuous time: every event adds 1/τ and the sum decays
 * by e^(−Δt/τ). Its expectation under a steady rate λ is λ, and it needs no buckets or history.
 */
export class DecayingRate {
  #perMs = 0;
  #at: number;
  constructor(
    readonly tauMs: number,
    now: number,
  ) {
    this.#at = now;
  }
  #decay(now: number): void {
    if (now > this.#at) this.#perMs *= Math.exp(-(now - this.#at) / this.tauMs);
    this.#at = Math.max(this.#at, now);
  }
  add(now: number, n = 1): void {
    this.#decay(now);
    this.#perMs += n / this.tauMs;
  }
  /** Events per second at `now`. */
  perSecond(now: number): number {
    this.#decay(now);
    return this.#perMs * 1000;
  }
}

/** Why the target has its current value (for logs and metrics). */
export type TargetReason = 'initial' | 'demand-grow' | 'demand-shrink' | 'idle-ttl';

/** One pool's demand sizer: fed arrivals and refill times, asked for a target size. */
export class DemandSizer {
  readonly min: number;
  readonly max: number;
  readonly #o: Required<Omit<DemandSizerOptions, 'min' | 'max'>>;
  readonly #clock: Clock;
  readonly #rate: DecayingRate;
  readonly #refill: SampleEwma;
  #target: number;
  #changedAt: number;
  #lastArrival: number;
  #reason: TargetReason = 'initial';
  /** Sizes wanted during the last cool-down, as a decreasing deque: its head is their maximum. */
  readonly #recent: { at: number; want: number }[] = [];

  constructor(opts: DemandSizerOptions, clock: Clock) {
    if (!(Number.isInteger(opts.min) && Number.isInteger(opts.max) && opts.min >= 0 && opts.max >= opts.min))
      throw new RangeError(
        `pool sizes need 0 <= min <= max (integers), got min ${opts.min}, max ${opts.max}`,
      );
    this.min = opts.min;
    this.max = opts.max;
    this.#o = {
      windowMs: opts.windowMs ?? SIZER_DEFAULTS.windowMs,
      missProbability: opts.missProbability ?? SIZER_DEFAULTS.missProbability,
      cooldownMs: opts.cooldownMs ?? SIZER_DEFAULTS.cooldownMs,
      idleTtlMs: opts.idleTtlMs ?? SIZER_DEFAULTS.idleTtlMs,
      initialRefillMs: opts.initialRefillMs ?? SIZER_DEFAULTS.initialRefillMs,
      refillAlpha: opts.refillAlpha ?? SIZER_DEFAULTS.refillAlpha,
    };
    this.#clock = clock;
    const now = clock.monotonic();
    this.#rate = new DecayingRate(this.#o.windowMs, now);
    this.#refill = new SampleEwma(this.#o.initialRefillMs, this.#o.refillAlpha);
    this.#target = this.min;
    this.#changedAt = now;
    this.#lastArrival = now; // a pool nobody ever asks decays to min one idle TTL after it starts
  }

  /** A hand-out request for this pool's shape (hit or miss: both are demand). */
  onArrival(n = 1): void {
    const now = this.#clock.monotonic();
    this.#rate.add(now, n);
    this.#lastArrival = now;
    this.#observe(now, this.desired()); // a burst's peak counts for the cool-down even if nobody asks now
  }

  #observe(now: number, want: number): number {
    while (this.#recent.length > 0 && this.#recent[this.#recent.length - 1]!.want <= want) this.#recent.pop();
    this.#recent.push({ at: now, want });
    while (this.#recent[0]!.at < now - this.#o.cooldownMs) this.#recent.shift();
    return this.#recent[0]!.want;
  }

  /** A measured refill: ms from the pool asking for a VM to that VM being ready (boot or clone, queueing included). */
  onRefill(ms: number): void {
    this.#refill.add(ms);
  }

  /** Requests per second, averaged over the window. */
  ratePerSecond(): number {
    return this.#rate.perSecond(this.#clock.monotonic());
  }

  /** The refill time the rule uses, ms. */
  refillMs(): number {
    return this.#refill.value;
  }

  /** Little's law plus the margin, whole VMs, clamped to [min, max]; no cool-down or TTL applied. */
  desired(): number {
    const load = this.ratePerSecond() * (this.refillMs() / 1000); // λ·T: VMs being refilled, on average
    return Math.min(this.max, Math.max(this.min, poissonSize(load, this.#o.missProbability, this.max)));
  }

  /**
   * The size the pool should keep now. Grows at once; shrinks at most once per cool-down, to the highest size
   * wanted during it; min after the idle TTL. Call it on every arrival, refill and health tick: the cool-down's
   * peak is taken over these calls.
   */
  target(): number {
    const now = this.#clock.monotonic();
    if (now - this.#lastArrival >= this.#o.idleTtlMs) {
      if (this.#target !== this.min) {
        this.#target = this.min;
        this.#changedAt = now;
        this.#reason = 'idle-ttl';
      }
      return this.#target;
    }
    const want = this.desired();
    const peak = this.#observe(now, want);
    if (want > this.#target) {
      this.#target = want;
      this.#changedAt = now;
      this.#reason = 'demand-grow';
    } else if (peak < this.#target && now - this.#changedAt >= this.#o.cooldownMs) {
      this.#target = peak;
      this.#changedAt = now;
      this.#reason = 'demand-shrink';
    }
    return this.#target;
  }

  /** What the last change of the target was (after `target()`). */
  get reason(): TargetReason {
    return this.#reason;
  }

  /** A snapshot for `factory status` and metrics. */
  snapshot(): {
    target: number;
    min: number;
    max: number;
    ratePerSecond: number;
    refillMs: number;
    reason: TargetReason;
  } {
    const target = this.target();
    return {
      target,
      min: this.min,
      max: this.max,
      ratePerSecond: this.ratePerSecond(),
      refillMs: this.refillMs(),
      reason: this.#reason,
    };
  }
}

/**
 * The smallest n with P(Poisson(mean) ≥ n) ≤ `miss`, searched up to `cap`. Past a mean of 500 (500 VMs booting
 * at once: no real pool) e^−mean heads for underflow, so a 3σ bound stands in.
 */
export function poissonSize(mean: number, miss: number, cap: number): number {
  if (!(mean > 1e-9)) return 0; // no demand at all
  if (mean > 500) return Math.min(cap, Math.ceil(mean + 3 * Math.sqrt(mean)));
  let p = Math.exp(-mean); // P(D = 0)
  let below = 0; // P(D < n)
  for (let n = 0; n < cap; n++) {
    if (1 - below <= miss) return n;
    below += p;
    p *= mean / (n + 1);
  }
  return cap;
}

/** One pool as the memory budget sees it. */
export interface BudgetClaim {
  /** Memory of one VM of the pool's shape, MiB. */
  memoryMiB: number;
  min: number;
  /** What the pool's sizer wants (already within [min, max]). */
  desired: number;
}

/**
 * Fits the pools' targets into a global memory budget (MiB over all pools' ready and booting VMs).
 *
 * Minimums come first and are always kept, even over the budget (they are the operator's promise; config
 * validation should refuse minimums that do not fit). What is left is shared by demand: every pool gets the
 * same fraction of its extra demand (desired − min, in MiB), rounded down to whole VMs; the MiB the rounding
 * left over then go one VM at a time to the pool with the lowest fill fraction whose VM still fits, so small
 * shapes soak up what a large one cannot use. Without a budget (`budgetMiB` ≤ 0 or infinite) the targets are
 * the desired ones.
 */
export function shareBudget(claims: readonly BudgetClaim[], budgetMiB: number): number[] {
  const desired = claims.map((c) => Math.max(c.min, c.desired));
  if (!(budgetMiB > 0) || !Number.isFinite(budgetMiB)) return desired;
  const extra = claims.map((c, i) => desired[i]! - c.min);
  const mins = claims.reduce((s, c) => s + c.min * c.memoryMiB, 0);
  let left = budgetMiB - mins;
  const wantMiB = claims.reduce((s, c, i) => s + extra[i]! * c.memoryMiB, 0);
  if (wantMiB <= left) return desired;
  if (left <= 0) return claims.map((c) => c.min);
  const fraction = left / wantMiB;
  const got = extra.map((e) => Math.floor(e * fraction));
  left -= claims.reduce((s, c, i) => s + got[i]! * c.memoryMiB, 0);
  for (;;) {
    let pick = -1;
    for (let i = 0; i < claims.length; i++) {
      if (got[i]! >= extra[i]! || claims[i]!.memoryMiB > left) continue;
      if (pick < 0 || got[i]! / extra[i]! < got[pick]! / extra[pick]!) pick = i;
    }
    if (pick < 0) break;
    got[pick]!++;
    left -= claims[pick]!.memoryMiB;
  }
  return claims.map((c, i) => c.min + got[i]!);
}

/**
 * Each VM's own max age: `maxAgeMs` ± `spread` (0.1: ±10 %), uniform from `random` (0 ≤ r < 1), so VMs booted
 * together (a pool filled at start) do not all expire, and all get rebooted, in the same health tick.
 * 0 (never expire) stays 0.
 */
export function jitteredMaxAge(maxAgeMs: number, random: () => number, spread = 0.1): number {
  if (maxAgeMs <= 0) return maxAgeMs;
  const s = Math.min(Math.max(spread, 0), 1);
  return Math.round(maxAgeMs * (1 + s * (2 * random() - 1)));
}
