import assert from 'node:assert/strict';
import { beforeEach, describe, it } from 'node:test';
import { isVmcError } from '../../../src/errors.js';
import { nullMetrics, type RouteKind } from '../../../src/factory/metrics.js';
import { type PoolEntry, PoolSet } from '../../../src/factory/pool-set.js';
import { nullLogger } from '../../../src/platform/logger.js';
import type { Vm } from '../../../src/vm/vm.js';
import { FakeBase, type FakeVm } from '../../helpers/fake-base.js';
import { ManualClock, runOn } from '../../helpers/manual-clock.js';

const SMALL = { cpus: 1, memoryMiB: 512 };
const BIG = { cpus: 2, memoryMiB: 1024 };

describe('PoolSet (pools per shape, on a manual clock)', () => {
  let clock: ManualClock;
  let routes: RouteKind[];
  beforeEach(() => {
    clock = new ManualClock();
    routes = [];
  });

  function set(
    pools: Array<Omit<PoolEntry, 'base' | 'kind'> & { base: FakeBase }>,
    opts: { budgetMiB?: number; bootMs?: number } = {},
  ) {
    const s = new PoolSet(
      pools.map((p) => ({ ...p, kind: 'direct' as const })),
      {
        pool: {
          maxParallelBoots: 2,
          maxAgeMs: 0,
          healthIntervalMs: 1_000,
          acquireTimeoutMs: 60_000,
          retryInitialMs: 10,
          retryMaxMs: 40,
        },
        budgetMiB: opts.budgetMiB ?? 0,
        sizer: { windowMs: 60_000, cooldownMs: 120_000, idleTtlMs: 600_000, initialRefillMs: 5_000 },
      },
      {
        clock,
        logger: nullLogger,
        random: () => 0.5,
        metrics: { pool: () => nullMetrics, route: (k) => void routes.push(k) },
      },
    );
    s.start();
    return s;
  }

  const run = <T>(p: Promise<T>, limitMs = 60_000, stepMs = 10) => runOn(clock, p, limitMs, stepMs);

  const shapeOf = (vm: Vm) => {
    const s = (vm as unknown as FakeVm).record.spec;
    return { cpus: s.cpus, memoryMiB: s.memoryMiB };
  };

  it('serves each request from the pool of its exact shape; a request without a shape gets the default pool', async () => {
    const small = new FakeBase(clock, 50, SMALL);
    const big = new FakeBase(clock, 50, BIG);
    const s = set([
      { name: 'default', base: small, min: 2, max: 2 },
      { name: 'big', base: big, min: 2, max: 2 },
    ]);
    await run(s.waitReady());
    assert.deepEqual(shapeOf(await run(s.getBaseVM(undefined, { shape: BIG }))), BIG);
    assert.deepEqual(shapeOf(await run(s.getBaseVM(undefined, { shape: SMALL }))), SMALL);
    assert.deepEqual(shapeOf(await run(s.getBaseVM())), SMALL);
    assert.deepEqual(routes, ['exact', 'exact', 'exact']);
    const st = s.status();
    assert.deepEqual(
      st.pools.map((p) => [p.name, p.status.hits]),
      [
        ['default', 2],
        ['big', 1],
      ],
    );
    assert.equal(st.hits, 3, 'the sums are over the pools');
    assert.equal(st.target, 4);
    await run(s.close());
  });

  it('when its pool is empty: a larger shape as is, else a smaller one to grow; nothing ready: a miss of its own pool', async () => {
    const small = new FakeBase(clock, 10_000, SMALL);
    const big = new FakeBase(clock, 10_000, BIG);
    const s = set([
      { name: 'default', base: small, min: 1, max: 1 },
      { name: 'big', base: big, min: 1, max: 1 },
    ]);
    await run(s.waitReady());
    // Small asked twice: its own VM, then the big pool's (larger, as is) while small refills.
    assert.deepEqual(shapeOf(await run(s.getBaseVM(undefined, { shape: SMALL }))), SMALL);
    assert.deepEqual(shapeOf(await run(s.getBaseVM(undefined, { shape: SMALL }))), BIG);
    assert.deepEqual(routes, ['exact', 'larger']);
    await run(s.waitReady());
    // Big asked twice: its own, then the small one (the client grows it).
    assert.deepEqual(shapeOf(await run(s.getBaseVM(undefined, { shape: BIG }))), BIG);
    assert.deepEqual(shapeOf(await run(s.getBaseVM(undefined, { shape: BIG }))), SMALL);
    assert.deepEqual(routes.slice(2), ['exact', 'grow']);
    // Nothing ready: under `fail` the big pool misses (its counter), at once.
    await assert.rejects(s.getBaseVM(undefined, { shape: BIG, missPolicy: 'fail' }), (e) =>
      isVmcError(e, 'VMC_ERR_CACHE_MISS'),
    );
    assert.equal(s.status().pools[1]!.status.missesByPolicy.fail, 1);
    assert.equal(s.status().pools[0]!.status.missesByPolicy.fail, 0);
    assert.equal(routes.at(-1), 'miss');
    // Under `wait` the big pool's next boot serves it.
    const vm = await run(s.getBaseVM(undefined, { shape: BIG }));
    assert.deepEqual(shapeOf(vm), BIG);
    await run(s.close());
  });

  it('a waiting request is served by the first VM to become ready in any pool within reach, and leaves its own queue', async () => {
    const small = new FakeBase(clock, 1_000, SMALL);
    const big = new FakeBase(clock, 10_000, BIG);
    const s = set([
      { name: 'default', base: small, min: 1, max: 1 },
      { name: 'big', base: big, min: 1, max: 1 },
    ]);
    await run(s.waitReady());
    await run(s.getBaseVM(undefined, { shape: SMALL }));
    await run(s.getBaseVM(undefined, { shape: BIG }));
    // Nothing ready: two big requests wait. The small pool's refill is ready first (1 s against 10 s) and serves
    // the older one (grown by its client); the big pool's next boot serves the other.
    const t0 = clock.monotonic();
    const first = s.getBaseVM(undefined, { shape: BIG });
    const second = s.getBaseVM(undefined, { shape: BIG });
    const a = await run(first);
    assert.deepEqual(shapeOf(a), SMALL);
    assert.ok(
      clock.monotonic() - t0 < 2_000,
      `served after ${clock.monotonic() - t0} ms, by the small refill`,
    );
    // The big pool's refill and its boot for the waiters hold both boot slots, so the small pool's next refill
    // queues behind them: the big refill (started at the exact take, just before t0) serves it.
    assert.deepEqual(shapeOf(await run(second)), BIG);
    assert.ok(clock.monotonic() - t0 >= 9_000, `served after ${clock.monotonic() - t0} ms`);
    const st = s.status();
    const [def, bigPool] = st.pools;
    assert.equal(def!.status.hits, 1, 'serving a wait is not a hit');
    assert.equal(bigPool!.status.hits, 1);
    assert.equal(bigPool!.status.missesByPolicy.wait, 2, "both waits are the big pool's misses");
    assert.equal(st.hits, 2);
    // The big pool booted for two waiters, and one was served elsewhere: a boot it no longer needs is shelved
    // while the pool is below its target, stopped (shrink) past it, never kept above the target.
    await run(s.waitReady());
    await run(clock.sleep(12_000).then(() => undefined));
    const after = s.status().pools;
    assert.deepEqual(
      after.map((p) => p.status.idle.length),
      [1, 1],
    );
    const live = [...small.made, ...big.made].filter((v) => !v.destroyed).length;
    assert.equal(live, 2 + 4, 'two idle VMs and the four handed out: nothing else alive');
    // Big VMs: the first take, the second waiter's, the idle one; any other boot was stopped.
    assert.equal(after[1]!.status.evicted.shrink, big.boots - 3, 'the big boots nobody took were stopped');
    await run(s.close());
  });

  it('a boot for a waiter that another pool served is stopped when its pool is already at its target', async () => {
    const small = new FakeBase(clock, 1_000, SMALL);
    const big = new FakeBase(clock, 10_000, BIG);
    const s = set([
      { name: 'default', base: small, min: 1, max: 1 },
      { name: 'big', base: big, min: 1, max: 1 },
    ]);
    await run(s.waitReady());
    await run(s.getBaseVM(undefined, { shape: SMALL })); // the small refill takes a slot at once
    await run(s.getBaseVM(undefined, { shape: BIG })); // the big refill the other
    const vm = await run(s.getBaseVM(undefined, { shape: BIG })); // a third big boot queues for a slot
    assert.deepEqual(shapeOf(vm), SMALL, 'served by the small refill, 1 s in');
    await run(clock.sleep(15_000).then(() => undefined));
    const big2 = s.status().pools[1]!.status;
    assert.equal(big.boots, 3);
    assert.equal(big2.idle.length, 1, 'the refill');
    assert.equal(big2.evicted.shrink, 1, 'the boot for the waiter, no longer wanted');
    assert.equal(big.made.filter((v) => !v.destroyed).length, 2, 'the first take and the idle one');
    await run(s.close());
  });

  it('refuses a shape above the hot-plug limits at once, taking nothing (no VM could be grown to it)', async () => {
    const small = new FakeBase(clock, 50, SMALL);
    const s = set([{ name: 'default', base: small, min: 1, max: 1 }]);
    await run(s.waitReady());
    const max = small.config();
    for (const shape of [
      { cpus: max.maxCpus + 1, memoryMiB: 512 },
      { cpus: 1, memoryMiB: max.maxMemoryMiB + 256 },
    ]) {
      await assert.rejects(
        s.getBaseVM(undefined, { shape }),
        (e) => isVmcError(e, 'VMC_ERR_CONFIG_INVALID') && /above the cache's hot-plug limits/.test(e.message),
      );
    }
    assert.equal(s.pool('default')!.ready, 1, 'nothing taken');
    assert.deepEqual(routes, []);
    await run(s.close());
  });

  it('a shape without a pool is served by the closest pool, and misses there', async () => {
    const small = new FakeBase(clock, 10_000, SMALL);
    const big = new FakeBase(clock, 10_000, BIG);
    const s = set([
      { name: 'default', base: small, min: 0, max: 1 },
      { name: 'big', base: big, min: 0, max: 1 },
    ]);
    // Nothing ready anywhere: 2 vCPU/768 MiB's home is the big pool (larger as is beats a grow of +1 vCPU).
    await assert.rejects(s.getBaseVM(undefined, { shape: { cpus: 2, memoryMiB: 768 }, missPolicy: 'fail' }));
    assert.equal(s.status().pools[1]!.status.missesByPolicy.fail, 1);
    await run(s.close());
  });

  it('sizes a demand-driven pool from its arrivals: grows with a burst, back to min after the idle TTL', async () => {
    const small = new FakeBase(clock, 50, SMALL);
    const big = new FakeBase(clock, 5_000, BIG);
    const s = set([
      { name: 'default', base: small, min: 1, max: 1 },
      { name: 'big', base: big, min: 0, max: 4 },
    ]);
    await run(s.waitReady());
    assert.equal(s.status().pools[1]!.target, 0, 'no demand yet: min');
    const got: Promise<Vm>[] = [];
    for (let i = 0; i < 5; i++) got.push(s.getBaseVM(undefined, { shape: BIG, missPolicy: 'cold' }));
    await run(Promise.all(got));
    const grown = s.status().pools[1]!;
    assert.ok(grown.target >= 1 && grown.target <= 4, `a burst of 5 raised the target (got ${grown.target})`);
    assert.equal(grown.targetReason, 'demand-grow');
    assert.ok(grown.ratePerSecond! > 0);
    await run(s.waitReady(), 120_000, 100);
    assert.equal(s.pool('big')!.ready, grown.target, 'the pool filled to its new target');
    // Ten idle minutes: the TTL takes it back to min, stopping the idle VMs (evicted: shrink).
    await run(clock.sleep(600_000 + 2_000), 700_000, 1_000);
    const idle = s.status().pools[1]!;
    assert.equal(idle.target, 0);
    assert.equal(idle.targetReason, 'idle-ttl');
    assert.equal(idle.status.idle.length, 0);
    assert.equal(idle.status.evicted.shrink, grown.target);
    await run(s.close());
  });

  it('a memory budget caps the sum over pools: minimums kept, the rest shared by demand', async () => {
    const small = new FakeBase(clock, 50, SMALL);
    const big = new FakeBase(clock, 5_000, BIG);
    // 512 for the default pool's minimum, 1024 left: at most one big VM, however high its demand.
    const s = set(
      [
        { name: 'default', base: small, min: 1, max: 1 },
        { name: 'big', base: big, min: 0, max: 4 },
      ],
      { budgetMiB: 1536 },
    );
    await run(s.waitReady());
    // Eight at once: λ·T ≈ 8/60 s × 5 s wants 3 VMs of 1024 MiB.
    const got: Promise<Vm>[] = [];
    for (let i = 0; i < 8; i++) got.push(s.getBaseVM(undefined, { shape: BIG, missPolicy: 'cold' }));
    await run(Promise.all(got));
    const p = s.status().pools[1]!;
    assert.equal(p.target, 1);
    assert.equal(p.targetReason, 'budget');
    assert.equal(s.status().memoryBudgetMiB, 1536);
    await run(s.close());
  });

  it('adopts each VM into the pool of its shape, up to its target, and returns the rest', async () => {
    const small = new FakeBase(clock, 50, SMALL);
    const big = new FakeBase(clock, 50, BIG);
    const other = new FakeBase(clock, 50, { cpus: 3, memoryMiB: 512 });
    const s = new PoolSet(
      [
        { name: 'default', base: small, kind: 'direct', min: 1, max: 1 },
        { name: 'big', base: big, kind: 'direct', min: 1, max: 1 },
      ],
      {
        pool: {
          maxParallelBoots: 1,
          maxAgeMs: 0,
          healthIntervalMs: 1_000,
          acquireTimeoutMs: 1_000,
          retryInitialMs: 10,
          retryMaxMs: 40,
        },
        budgetMiB: 0,
      },
      { clock, logger: nullLogger },
    );
    const vms = [
      ...(await run(Promise.all([big.getBaseVM(), big.getBaseVM()]))),
      await run(small.getBaseVM()),
      await run(other.getBaseVM()),
    ];
    assert.equal(s.accepts(big.config()), true);
    assert.equal(s.accepts(other.config()), false);
    const left = s.adopt(vms);
    assert.deepEqual(
      left.map((v) => v.id),
      [vms[3]!.id, vms[1]!.id],
      'the foreign shape, and the big VM beyond its pool',
    );
    assert.deepEqual(
      s.status().pools.map((p) => p.status.idle.map((v) => v.id)),
      [[vms[2]!.id], [vms[0]!.id]],
    );
    await run(s.close());
  });
});
