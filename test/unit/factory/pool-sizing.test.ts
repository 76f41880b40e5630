import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import {
  type BudgetClaim,
  DemandSizer,
  type DemandSizerOptions,
  jitteredMaxAge,
  poissonSize,
  shareBudget,
} from '../../../src/factory/pool-sizing.js';
import { ManualClock } from '../../helpers/manual-clock.js';

/** A seeded random source (mulberry32), so a jitter sequence can be replayed. */
function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function sizer(clock: ManualClock, o: Partial<DemandSizerOptions> = {}): DemandSizer {
  const s = new DemandSizer({ min: 1, max: 4, ...o }, clock);
  s.onRefill(8400); // the bench's cold boot under TCG
  return s;
}

describe('DemandSizer', () => {
  it('starts at min and a burst raises the target at once, by Little’s law plus the margin', () => {
    const clock = new ManualClock();
    const s = sizer(clock, { max: 10 });
    assert.equal(s.target(), 1);
    for (let i = 0; i < 5; i++) s.onArrival();
    // λ = 5 / 60 s; λ·T = 0.0833 × 8.4 = 0.70; P(Poisson(0.7) ≥ 2) = 16 %, ≥ 3 = 3.4 % → 3
    assert.ok(Math.abs(s.ratePerSecond() - 5 / 60) < 1e-9);
    assert.equal(s.target(), 3);
    assert.equal(s.reason, 'demand-grow');
  });

  it('a large burst is bounded by max', () => {
    const clock = new ManualClock();
    const s = sizer(clock, { max: 4 });
    s.onArrival(50); // λ·T = 7 → 12, clamped
    assert.equal(s.desired(), 4);
    assert.equal(s.target(), 4);
  });

  it('a steady rate: 0.5/s with 10 s boots (λ·T = 5) keeps 10', async () => {
    const clock = new ManualClock();
    const s = new DemandSizer({ min: 0, max: 20 }, clock);
    s.onRefill(10_000);
    for (let i = 0; i < 300; i++) {
      s.onArrival();
      await clock.advance(2000);
    }
    assert.ok(Math.abs(s.ratePerSecond() - 0.5) < 0.02, `rate ${s.ratePerSecond()}`);
    assert.equal(s.target(), 10); // P(Poisson(5) ≥ 9) = 6.8 %, ≥ 10 = 3.2 %
  });

  it('follows the measured refill time: slower boots need a larger pool', () => {
    const clock = new ManualClock();
    const s = new DemandSizer({ min: 0, max: 50, refillAlpha: 1 }, clock);
    s.onArrival(30); // 0.5/s
    s.onRefill(2000); // λ·T = 1: P(≥ 3) = 8 %, P(≥ 4) = 1.9 %
    assert.equal(s.desired(), 4);
    s.onRefill(20_000); // λ·T = 10: P(≥ 15) = 8.3 %, P(≥ 16) = 4.9 %
    assert.equal(s.desired(), 16);
    s.onRefill(Number.NaN); // a broken measurement is ignored
    assert.equal(s.refillMs(), 20_000);
  });

  it('cool-down: shrinks at most once per cool-down, to the peak wanted during it; grows at once', async () => {
    const clock = new ManualClock();
    const s = sizer(clock, { min: 0, max: 10 });
    s.onArrival(5);
    assert.equal(s.target(), 3);
    await clock.advance(60_000); // λ decayed by e^-1: λ·T = 0.26 → 2
    assert.equal(s.desired(), 2);
    assert.equal(s.target(), 3, 'no shrink within the cool-down');
    await clock.advance(61_000); // 121 s since the growth
    assert.equal(s.target(), 2);
    assert.equal(s.reason, 'demand-shrink');
    await clock.advance(60_000); // λ·T = 0.03 → 1
    assert.equal(s.desired(), 1);
    assert.equal(s.target(), 2, 'one shrink per cool-down');
    await clock.advance(61_000);
    assert.equal(s.target(), 1);
    s.onArrival(5);
    assert.equal(s.target(), 3, 'growth does not wait for the cool-down');
    assert.equal(s.reason, 'demand-grow');
  });

  it('regular bursts do not flap the target; without a cool-down they do', async () => {
    const changes = async (cooldownMs: number) => {
      const clock = new ManualClock();
      const s = sizer(clock, { min: 0, max: 10, cooldownMs });
      let n = 0;
      let last = s.target();
      // a burst of 4 every 40 s for 20 min: the wanted size swings between 3 and 4 within each 40 s
      for (let t = 0; t < 1_200_000; t += 5_000) {
        if (t % 40_000 === 0) s.onArrival(4);
        const now = s.target();
        if (now !== last) n++;
        last = now;
        await clock.advance(5_000);
      }
      return n;
    };
    assert.ok((await changes(120_000)) <= 2); // grows to 3, then 4, and stays
    assert.ok((await changes(0)) >= 20);
  });

  it('an unused pool decays to min after the idle TTL, not before', async () => {
    const clock = new ManualClock();
    const s = sizer(clock, { min: 0, max: 10 });
    s.onArrival(5);
    assert.equal(s.target(), 3);
    await clock.advance(300_000);
    // the decayed rate still reads as some demand, so the rule keeps one VM: only the TTL takes it to min
    assert.equal(s.target(), 1);
    await clock.advance(300_000);
    assert.equal(s.target(), 0);
    assert.equal(s.reason, 'idle-ttl');
    s.onArrival();
    assert.ok(s.target() >= 1, 'a request after the TTL grows it again');
  });

  it('min = max is a fixed pool ([factory] vm_cache_number alone), whatever the demand', async () => {
    const clock = new ManualClock();
    const fixed = new DemandSizer({ min: 3, max: 3 }, clock); // [factory] vm_cache_number = 3
    assert.equal(fixed.target(), 3);
    fixed.onArrival(100);
    assert.equal(fixed.target(), 3);
    await clock.advance(3_600_000);
    assert.equal(fixed.target(), 3);
  });

  it('refuses min > max and non-integers', () => {
    const clock = new ManualClock();
    assert.throws(() => new DemandSizer({ min: 3, max: 2 }, clock), RangeError);
    assert.throws(() => new DemandSizer({ min: 0.5, max: 2 }, clock), RangeError);
  });
});

describe('poissonSize', () => {
  it('is the smallest size whose miss probability is at most the bound', () => {
    assert.equal(poissonSize(0, 0.05, 10), 0);
    assert.equal(poissonSize(0.04, 0.05, 10), 1); // P(≥ 1) = 3.9 %
    assert.equal(poissonSize(0.1, 0.05, 10), 2); // P(≥ 1) = 9.5 %: one VM is not enough
    assert.equal(poissonSize(0.84, 0.05, 10), 4); // P(≥ 3) = 5.3 %, P(≥ 4) = 1.1 %
    assert.equal(poissonSize(0.84, 0.1, 10), 3);
    assert.equal(poissonSize(50, 0.05, 20), 20); // capped
    assert.equal(poissonSize(10_000, 0.05, 1e9), 10_300); // past the exact range: mean + 3σ
  });
});

describe('shareBudget', () => {
  it('keeps the desired targets when they fit, or with no budget', () => {
    const claims: BudgetClaim[] = [
      { memoryMiB: 512, min: 1, desired: 3 },
      { memoryMiB: 1024, min: 0, desired: 2 },
    ];
    assert.deepEqual(shareBudget(claims, 8192), [3, 2]);
    assert.deepEqual(shareBudget(claims, 0), [3, 2]);
    assert.deepEqual(shareBudget(claims, Number.POSITIVE_INFINITY), [3, 2]);
  });

  it('two pools over budget: minimums first, then the rest by demand, whole VMs', () => {
    const claims: BudgetClaim[] = [
      { memoryMiB: 512, min: 1, desired: 6 }, // extra 5 VMs = 2560 MiB
      { memoryMiB: 1024, min: 1, desired: 4 }, // extra 3 VMs = 3072 MiB
    ];
    // 4096 − 1536 of minimums = 2560 for 5632 of extra demand: 45 % each → 2 and 1 VMs (2048 MiB); the
    // 512 MiB left fits one more small VM, not a large one
    const got = shareBudget(claims, 4096);
    assert.deepEqual(got, [4, 2]);
    assert.equal(got[0]! * 512 + got[1]! * 1024, 4096);
  });

  it('equal demand shares equally; minimums are kept even over the budget', () => {
    const two: BudgetClaim[] = [
      { memoryMiB: 512, min: 0, desired: 10 },
      { memoryMiB: 512, min: 0, desired: 10 },
    ];
    assert.deepEqual(shareBudget(two, 5120), [5, 5]);
    assert.deepEqual(
      shareBudget(
        [
          { memoryMiB: 512, min: 4, desired: 8 },
          { memoryMiB: 512, min: 4, desired: 8 },
        ],
        2048,
      ),
      [4, 4],
    );
  });

  it('property: within [min, desired], within the budget when minimums fit, and nothing that fits is left', () => {
    const claim = fc
      .record({ memoryMiB: fc.constantFrom(256, 512, 768, 1024, 2048), min: fc.nat(3), more: fc.nat(8) })
      .map((c) => ({ memoryMiB: c.memoryMiB, min: c.min, desired: c.min + c.more }));
    fc.assert(
      fc.property(
        fc.array(claim, { minLength: 1, maxLength: 5 }),
        fc.integer({ min: 1, max: 40_000 }),
        (cs, b) => {
          const got = shareBudget(cs, b);
          const used = got.reduce((s, n, i) => s + n * cs[i]!.memoryMiB, 0);
          const mins = cs.reduce((s, c) => s + c.min * c.memoryMiB, 0);
          for (let i = 0; i < cs.length; i++) {
            assert.ok(got[i]! >= cs[i]!.min && got[i]! <= cs[i]!.desired);
            assert.ok(Number.isInteger(got[i]));
          }
          if (mins <= b) {
            assert.ok(used <= b, `used ${used} of ${b}`);
            for (let i = 0; i < cs.length; i++)
              assert.ok(
                got[i] === cs[i]!.desired || cs[i]!.memoryMiB > b - used,
                'a VM that fits was left out',
              );
          } else
            assert.deepEqual(
              got,
              cs.map((c) => c.min),
            );
        },
      ),
    );
  });
});

describe('jitteredMaxAge', () => {
  it('stays within ±10 %, spreads over the range, and replays with the same seed', () => {
    const r = seeded(42);
    const ages = Array.from({ length: 1000 }, () => jitteredMaxAge(3_600_000, r));
    for (const a of ages) assert.ok(a >= 3_240_000 && a <= 3_960_000, `${a}`);
    assert.ok(Math.min(...ages) < 3_260_000 && Math.max(...ages) > 3_940_000, 'covers the range');
    assert.ok(new Set(ages).size > 900, 'VMs get different ages');
    const again = seeded(42);
    assert.deepEqual(
      Array.from({ length: 1000 }, () => jitteredMaxAge(3_600_000, again)),
      ages,
    );
  });

  it('0 (never expire) stays 0; the spread is a parameter', () => {
    assert.equal(
      jitteredMaxAge(0, () => 0.99),
      0,
    );
    assert.equal(
      jitteredMaxAge(1000, () => 0, 0.2),
      800,
    );
    assert.equal(
      jitteredMaxAge(1000, () => 0.5),
      1000,
    );
  });
});
