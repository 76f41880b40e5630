import assert from 'node:assert/strict';
import { beforeEach, describe, it } from 'node:test';
import { isVmcError } from '../../../src/errors.js';
import type { FactoryBase } from '../../../src/factory/base.js';
import { CachingFactory, type PoolOptions } from '../../../src/factory/cache.js';
import { nullLogger } from '../../../src/platform/logger.js';
import type { Vm } from '../../../src/vm/vm.js';
import { FakeBase, FakeVm } from '../../helpers/fake-base.js';
import { ManualClock, observe, runOn } from '../../helpers/manual-clock.js';

const OPTS: PoolOptions = {
  size: 2,
  maxParallelBoots: 2,
  maxAgeMs: 0,
  healthIntervalMs: 20,
  acquireTimeoutMs: 500,
  retryInitialMs: 10,
  retryMaxMs: 40,
};

describe('CachingFactory (pool state machine, on a manual clock)', () => {
  let clock: ManualClock;
  beforeEach(() => {
    clock = new ManualClock();
  });

  function pool(base: FactoryBase, opts: Partial<PoolOptions> = {}) {
    const p = new CachingFactory(base, { ...OPTS, ...opts }, { clock, logger: nullLogger });
    p.start();
    return p;
  }

  const run = <T>(p: Promise<T>, limitMs = 5_000, stepMs = 5) => runOn(clock, p, limitMs, stepMs);

  it('fills to its size and hands out each VM once, refilling behind it', async () => {
    const base = new FakeBase(clock);
    const p = pool(base);
    await run(p.waitReady(2, 1000));
    const a = await run(p.getBaseVM());
    const b = await run(p.getBaseVM());
    assert.notEqual(a.id, b.id);
    await run(p.waitReady(2, 1000));
    assert.equal(p.status().hits, 2);
    assert.ok(!p.status().idle.some((v) => v.id === a.id || v.id === b.id), 'a VM handed out never returns');
    await run(p.close());
  });

  it('never boots more than maxParallelBoots at once, over a whole fill, drain and refill', async () => {
    for (const maxParallelBoots of [1, 2]) {
      const base = new FakeBase(clock, 30);
      const p = pool(base, { size: 4, maxParallelBoots });
      await run(p.waitReady(4, 1000));
      // Five requests on four idle VMs: the fifth waits, and waiters add demand beyond the pool size.
      const got = await run(Promise.all([1, 2, 3, 4, 5].map(() => p.getBaseVM())));
      assert.equal(new Set(got.map((v) => v.id)).size, 5);
      await run(p.waitReady(4, 1000));
      await run(p.close());
      assert.equal(base.boots, 9);
      assert.equal(base.peak, maxParallelBoots, `peak of ${base.peak} boots at once`);
    }
  });

  it('keeps serving and retries with backoff when boots fail, then recovers', async () => {
    const base = new FakeBase(clock);
    base.failing = true;
    const p = pool(base);
    await clock.advance(80);
    const s = p.status();
    assert.ok(s.bootFailures >= 2, `failures counted (${s.bootFailures})`);
    assert.match(s.lastError!, /bad kernel/);
    assert.ok(s.nextRetryAt !== null);
    // Backoff: 10, 20, 40, 40 ms... so in 80 ms far fewer than the 16 boots an unthrottled loop would make.
    assert.ok(base.boots < 10, `backoff throttles retries (${base.boots} boots)`);
    base.failing = false;
    await run(p.waitReady(2, 1000));
    assert.equal(p.status().consecutiveFailures, 0);
    assert.equal(p.status().lastError, null);
    await run(p.close());
  });

  it('makes a waiting request fail after the acquire timeout with the boot error, and stays open', async () => {
    const base = new FakeBase(clock);
    base.failing = true;
    const p = pool(base, { acquireTimeoutMs: 60 });
    const waiting = observe(p.getBaseVM());
    await clock.advance(59);
    assert.equal(waiting.state, 'pending', 'not before the timeout');
    await clock.advance(1);
    assert.equal(waiting.state, 'rejected');
    const e = waiting.error;
    assert.ok(isVmcError(e, 'VMC_ERR_CACHE_TIMEOUT') && /bad kernel/.test(e.message), `got ${e}`);
    base.failing = false;
    const vm = await run(p.getBaseVM());
    assert.ok(vm.id);
    await run(p.close());
  });

  it('serves waiters from the next boot when empty', async () => {
    const base = new FakeBase(clock, 20);
    const p = pool(base, { size: 1, maxParallelBoots: 3 });
    const got = await run(Promise.all([p.getBaseVM(), p.getBaseVM(), p.getBaseVM()]));
    assert.equal(new Set(got.map((v) => v.id)).size, 3, 'no VM is given to two requests');
    await run(p.close());
  });

  it('replaces dead idle VMs and never hands one out', async () => {
    const base = new FakeBase(clock);
    const p = pool(base, { healthIntervalMs: 10_000 });
    await run(p.waitReady(2, 1000));
    const [first] = base.made;
    first!.alive_ = false; // killed between health checks
    const vm = await run(p.getBaseVM());
    assert.notEqual(vm.id, first!.id);
    assert.ok(first!.destroyed);
    await run(p.close());
  });

  it('replaces idle VMs older than max age', async () => {
    const base = new FakeBase(clock);
    const p = pool(base, { maxAgeMs: 30, healthIntervalMs: 15 });
    await run(p.waitReady(2, 1000));
    const firstIds = p.status().idle.map((v) => v.id);
    await clock.advance(100);
    await run(p.waitReady(2, 1000));
    assert.ok(p.status().idle.every((v) => !firstIds.includes(v.id)));
    assert.ok(base.made.slice(0, 2).every((v) => v.destroyed));
    await run(p.close());
  });

  it('close stops idle VMs, fails waiters, refuses later requests, and leaves no timer behind', async () => {
    const base = new FakeBase(clock, 50);
    const p = pool(base, { size: 1 });
    await run(p.waitReady(1, 1000));
    const idle = base.made[0]!;
    await run(p.getBaseVM()); // takes the only one; a refill is booting, and one more for the waiter below
    const waiting = assert.rejects(p.getBaseVM(), (e) => isVmcError(e, 'VMC_ERR_CACHE_CLOSED'));
    await run(p.close());
    await waiting;
    await assert.rejects(p.getBaseVM(), (e) => isVmcError(e, 'VMC_ERR_CACHE_CLOSED'));
    assert.equal(idle.destroyed, false, 'a handed-out VM is not touched');
    assert.equal(base.made.length, 3, 'the refill and the boot for the waiter finished after close');
    assert.ok(
      base.made.slice(1).every((v) => v.destroyed),
      'VMs that finished booting after close are stopped',
    );
    assert.equal(clock.pending, 0, 'no retry, health or acquire timer left');
  });

  describe('setTarget (the demand sizer moves the size)', () => {
    it('raising the target boots up to it, within maxParallelBoots', async () => {
      const base = new FakeBase(clock, 10);
      const p = pool(base, { size: 1 });
      await run(p.waitReady(1, 1000));
      assert.equal(base.boots, 1);
      p.setTarget(4);
      assert.equal(p.target, 4);
      assert.equal(p.status().booting, 2, 'boots start at once, two at a time');
      await run(p.waitReady(4, 1000));
      await clock.advance(100);
      assert.equal(base.boots, 4, 'exactly up to the new target');
      assert.equal(p.status().idle.length, 4);
      assert.equal(base.peak, 2);
      await run(p.close());
    });

    it('lowering it stops the oldest idle VMs beyond it, counted as shrink, and boots nothing', async () => {
      const base = new FakeBase(clock);
      const p = new CachingFactory(base, { ...OPTS, size: 3 }, { clock, logger: nullLogger });
      // Adopted out of age order, so "oldest" is not just "first in the ready list".
      const [young, oldest, older] = [100, 300, 200].map((age, i) => new FakeVm(`a${i}`, clock.now() - age));
      assert.deepEqual(p.adopt([young, oldest, older] as unknown as Vm[]), []);
      p.start();
      await clock.advance(50);
      assert.equal(base.boots, 0, 'full already');
      p.setTarget(1);
      assert.equal(p.target, 1);
      assert.deepEqual(
        p.status().idle.map((v) => v.id),
        [young!.id],
      );
      assert.ok(oldest!.destroyed && older!.destroyed, 'the two oldest are stopped');
      assert.equal(young!.destroyed, false);
      assert.deepEqual(p.status().evicted, { dead: 0, age: 0, shrink: 2 });
      await clock.advance(1_000);
      assert.equal(base.boots, 0, 'no boot to replace them');
      assert.equal(p.status().idle.length, 1);
      // Down to 0, then back up: it boots again.
      p.setTarget(0);
      assert.ok(young!.destroyed);
      assert.equal(p.status().evicted.shrink, 3);
      p.setTarget(2);
      await run(p.waitReady(2, 1000));
      assert.equal(base.boots, 2);
      await run(p.close());
    });

    it('lets VMs already booting finish, and stops those the lowered target has no room for', async () => {
      const base = new FakeBase(clock, 50);
      const p = pool(base, { size: 2, healthIntervalMs: 10 });
      await clock.advance(10);
      assert.equal(p.status().booting, 2);
      p.setTarget(0);
      assert.equal(p.status().booting, 2, 'not aborted');
      await clock.advance(500); // the boots finish, and many health checks pass
      assert.equal(base.boots, 2, 'nothing more started');
      assert.equal(base.made.length, 2, 'both boots finished');
      assert.equal(p.status().idle.length, 0, 'the pool keeps its target, not the VMs it no longer wants');
      assert.ok(base.made.every((v) => v.destroyed));
      assert.equal(p.status().evicted.shrink, 2);
      await run(p.close());
    });

    it('stops the VM booted for a waiter that timed out, rather than keep it above the size', async () => {
      const base = new FakeBase(clock, 100);
      const p = pool(base, { size: 1, acquireTimeoutMs: 50 });
      const waiting = observe(p.getBaseVM()); // a boot of its own beside the pool's
      await clock.advance(60);
      assert.ok(isVmcError(waiting.error, 'VMC_ERR_CACHE_TIMEOUT'), `got ${waiting.error}`);
      await clock.advance(100);
      assert.equal(base.made.length, 2);
      assert.equal(p.status().idle.length, 1, 'the size, not one more');
      assert.equal(base.made.filter((v) => v.destroyed).length, 1);
      await run(p.close());
    });

    it('keeps a VM that finishes booting when the target came back up meanwhile', async () => {
      const base = new FakeBase(clock, 50);
      const p = pool(base, { size: 2 });
      await clock.advance(10);
      p.setTarget(1);
      await clock.advance(10);
      p.setTarget(2);
      await run(p.waitReady(2, 1000));
      assert.equal(base.boots, 2, 'the two boots in flight serve the target raised again');
      assert.equal(p.status().evicted.shrink, 0);
      await run(p.close());
    });

    it('refuses a target that is not a whole number ≥ 0, and keeps the old one', async () => {
      const base = new FakeBase(clock);
      const p = pool(base);
      for (const bad of [-1, 1.5, Number.NaN, Number.POSITIVE_INFINITY])
        assert.throws(() => p.setTarget(bad), RangeError, String(bad));
      assert.equal(p.target, 2);
      await run(p.waitReady(2, 1000));
      assert.equal(base.boots, 2);
      await run(p.close());
    });
  });

  describe('max age jitter (±10 % per VM)', () => {
    it('with random() = 0 (−10 %) replaces a VM after 0.9 × maxAge, not before', async () => {
      const base = new FakeBase(clock, 5);
      const p = new CachingFactory(
        base,
        { ...OPTS, size: 1, maxAgeMs: 1_000, healthIntervalMs: 10 },
        { clock, logger: nullLogger, random: () => 0 },
      );
      p.start();
      await run(p.waitReady(1, 1000));
      const first = base.made[0]!;
      const age = () => clock.now() - first.record.createdAt;
      await clock.advance(899 - age());
      assert.equal(age(), 899);
      assert.equal(first.destroyed, false, 'not before 0.9 × maxAge');
      assert.equal(p.status().evicted.age, 0);
      await clock.advance(1 + 2 * 10); // past 900 ms, and a health check after it
      assert.ok(first.destroyed, `replaced by age ${age()} ms, well before the unjittered 1000 ms`);
      assert.equal(p.status().evicted.age, 1);
      await run(p.waitReady(1, 1000));
      assert.notEqual(p.status().idle[0]!.id, first.id);
      await run(p.close());
    });

    it('with random() just under 1 (+10 %) keeps it past maxAge, up to 1.1 × maxAge', async () => {
      const base = new FakeBase(clock, 5);
      const p = new CachingFactory(
        base,
        { ...OPTS, size: 1, maxAgeMs: 1_000, healthIntervalMs: 10 },
        { clock, logger: nullLogger, random: () => 0.9999 },
      );
      p.start();
      await run(p.waitReady(1, 1000));
      const first = base.made[0]!;
      await clock.advance(1_090 - (clock.now() - first.record.createdAt));
      assert.equal(first.destroyed, false, 'kept past the unjittered 1000 ms');
      await clock.advance(10 + 2 * 10);
      assert.ok(first.destroyed, 'replaced past 1.1 × maxAge, at the next health check');
      await run(p.close());
    });
  });

  describe('miss policy', () => {
    it('wait (the default): a request on an empty pool is served by the next boot, counted as a wait miss', async () => {
      const base = new FakeBase(clock, 20);
      const p = pool(base, { size: 1 });
      await run(p.waitReady(1, 1000));
      await run(p.getBaseVM()); // the only one; the refill is booting
      const waiting = observe(p.getBaseVM(undefined, { missPolicy: 'wait' }));
      await clock.advance(10);
      assert.equal(waiting.state, 'pending', 'waits for the refill');
      await clock.advance(20);
      assert.equal(waiting.state, 'resolved');
      const s = p.status();
      assert.deepEqual(s.missesByPolicy, { wait: 1, fail: 0, cold: 0 });
      assert.equal(s.misses, 1);
      await run(p.close());
    });

    it('wait: times out after acquireTimeoutMs with VMC_ERR_CACHE_TIMEOUT, counted', async () => {
      const base = new FakeBase(clock, 1_000);
      const p = pool(base, { size: 1, acquireTimeoutMs: 50 });
      const waiting = observe(p.getBaseVM(undefined, { missPolicy: 'wait' }));
      await clock.advance(49);
      assert.equal(waiting.state, 'pending');
      await clock.advance(1);
      assert.ok(isVmcError(waiting.error, 'VMC_ERR_CACHE_TIMEOUT'), `got ${waiting.error}`);
      assert.equal(p.status().missesByPolicy.wait, 1);
      await clock.advance(2_000);
      await run(p.close());
    });

    it('fail: rejects at once with VMC_ERR_CACHE_MISS on an empty pool, which keeps filling', async () => {
      const base = new FakeBase(clock, 20);
      const p = pool(base, { size: 1 });
      const got = observe(p.getBaseVM(undefined, { missPolicy: 'fail' }));
      await new Promise((r) => setImmediate(r)); // no clock time passes
      assert.equal(got.state, 'rejected');
      const e = got.error;
      assert.ok(isVmcError(e, 'VMC_ERR_CACHE_MISS') && /miss policy fail/.test(e.message), `got ${e}`);
      assert.equal(clock.monotonic(), 0);
      assert.deepEqual(p.status().missesByPolicy, { wait: 0, fail: 1, cold: 0 });
      await run(p.waitReady(1, 1000));
      const vm = await run(p.getBaseVM(undefined, { missPolicy: 'fail' }));
      assert.ok(vm.id, 'a ready VM is handed out whatever the policy');
      assert.equal(p.status().hits, 1);
      await run(p.close());
    });

    it('cold: boots one for the request outside the pool, which keeps its own size', async () => {
      const base = new FakeBase(clock, 30);
      const p = pool(base, { size: 1, maxParallelBoots: 1 });
      await clock.advance(1); // the pool's own boot is under way
      assert.equal(base.boots, 1);
      const got = observe(p.getBaseVM(undefined, { missPolicy: 'cold' }));
      await clock.advance(1);
      assert.equal(base.boots, 2, 'a boot of its own, beyond maxParallelBoots: the request pays for it');
      assert.equal(p.status().coldBooting, 1);
      assert.equal(p.status().booting, 1, "the pool's count is unchanged");
      await run(p.waitReady(1, 1000));
      await clock.advance(10);
      assert.equal(got.state, 'resolved');
      const vm = got.value!;
      assert.equal(vm.id, 'vm2', 'the request got its own boot, not the pool VM that was ready first');
      const s = p.status();
      assert.deepEqual(s.missesByPolicy, { wait: 0, fail: 0, cold: 1 });
      assert.equal(s.coldBooting, 0);
      assert.deepEqual(
        s.idle.map((v) => v.id),
        ['vm1'],
        'the pool keeps its VM',
      );
      assert.equal(base.boots, 2, 'no refill for a VM that never was in the pool');
      await run(p.close());
    });

    it('cold: close during the boot fails the request with VMC_ERR_CACHE_CLOSED and stops the VM', async () => {
      const base = new FakeBase(clock, 30);
      const p = pool(base, { size: 0 });
      const got = observe(p.getBaseVM(undefined, { missPolicy: 'cold' }));
      await clock.advance(5);
      const closing = p.close();
      await run(closing);
      assert.ok(isVmcError(got.error, 'VMC_ERR_CACHE_CLOSED'), `got ${got.error}`);
      assert.ok(base.made.every((v) => v.destroyed));
      assert.equal(clock.pending, 0);
    });
  });

  describe('health at hand-out', () => {
    it('discards a VM whose QEMU died, hands out the next one, and counts it', async () => {
      const base = new FakeBase(clock);
      const p = pool(base, { healthIntervalMs: 10_000 });
      await run(p.waitReady(2, 1000));
      base.made[0]!.alive_ = false;
      const vm = await run(p.getBaseVM(undefined, { missPolicy: 'fail' }));
      assert.equal(vm.id, base.made[1]!.id);
      assert.deepEqual(p.status().handoutDiscards, { qemu: 1, agent: 0 });
      assert.equal(p.status().missesByPolicy.fail, 0, 'not a miss: another VM was ready');
      await run(p.close());
    });

    it('applies the miss policy when the only VM fails the check', async () => {
      const base = new FakeBase(clock);
      const p = pool(base, { size: 1, healthIntervalMs: 10_000 });
      await run(p.waitReady(1, 1000));
      base.made[0]!.alive_ = false;
      await assert.rejects(p.getBaseVM(undefined, { missPolicy: 'fail' }), (e) =>
        isVmcError(e, 'VMC_ERR_CACHE_MISS'),
      );
      assert.deepEqual(p.status().handoutDiscards, { qemu: 1, agent: 0 });
      await run(p.close());
    });

    it("counts a client's report of an unready VM once, and only for a VM it handed out", async () => {
      const base = new FakeBase(clock);
      const p = pool(base);
      await run(p.waitReady(2, 1000));
      const vm = await run(p.getBaseVM());
      assert.equal(p.reportUnready('vm999'), false, 'not one of ours');
      assert.equal(p.reportUnready(base.made[1]!.id), false, 'still idle: not handed out');
      assert.equal(p.reportUnready(vm.id), true);
      assert.equal(p.reportUnready(vm.id), false, 'once');
      assert.deepEqual(p.status().handoutDiscards, { qemu: 0, agent: 1 });
      await run(p.close());
    });
  });

  describe('readiness gate on entry (agentGate: template clones)', () => {
    it('lets in only VMs whose agent answered, parked again; a silent one is stopped and counts as a failed boot', async () => {
      const base = new FakeBase(clock);
      base.silent.add(1);
      const p = pool(base, { agentGate: true });
      await run(p.waitReady(2, 1000));
      const [silent, ...rest] = base.made;
      assert.ok(silent!.destroyed, 'the silent clone was stopped');
      assert.ok(!p.status().idle.some((v) => v.id === silent!.id), 'and never entered the pool');
      assert.ok(p.status().bootFailures >= 1);
      for (const vm of rest.filter((v) => !v.destroyed)) assert.deepEqual(vm.gate, ['resume', 'park']);
      await run(p.close());
    });

    it('is off by default: a direct boot has waited for its agent already', async () => {
      const base = new FakeBase(clock);
      const p = pool(base);
      await run(p.waitReady(2, 1000));
      assert.ok(base.made.every((v) => v.gate.length === 0));
      await run(p.close());
    });
  });
});
