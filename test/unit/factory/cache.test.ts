import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { defaultVmSpec } from '../../../src/config/defaults.js';
import { isVmcError } from '../../../src/errors.js';
import type { FactoryBase } from '../../../src/factory/base.js';
import { CachingFactory, type PoolOptions } from '../../../src/factory/cache.js';
import { systemClock } from '../../../src/platform/clock.js';
import { nullLogger } from '../../../src/platform/logger.js';
import type { Vm } from '../../../src/vm/vm.js';

/** A VM stand-in: just what the pool looks at. */
class FakeVm {
  alive_ = true;
  destroyed = false;
  readonly record;
  constructor(readonly id: string) {
    this.record = {
      qemu: { pid: 1, startTime: 1 },
      spec: defaultVmSpec('/img', 'tcg'),
      createdAt: Date.now(),
    };
  }
  readonly qmp = { execute: async () => ({ status: this.alive_ ? 'paused' : 'dead' }) };
  alive() {
    return this.alive_;
  }
  async destroy() {
    this.destroyed = true;
    this.alive_ = false;
  }
}

/** A base whose boots take `bootMs` and fail while `failing` is true. */
class FakeBase implements FactoryBase {
  boots = 0;
  failing = false;
  readonly made: FakeVm[] = [];
  constructor(readonly bootMs = 5) {}
  config() {
    return defaultVmSpec('/img', 'tcg');
  }
  async getBaseVM(): Promise<Vm> {
    const n = ++this.boots;
    await systemClock.sleep(this.bootMs);
    if (this.failing) throw new Error(`boot ${n} failed: bad kernel`);
    const vm = new FakeVm(`vm${n}`);
    this.made.push(vm);
    return vm as unknown as Vm;
  }
  async close() {}
}

const OPTS: PoolOptions = {
  size: 2,
  maxParallelBoots: 2,
  maxAgeMs: 0,
  healthIntervalMs: 20,
  acquireTimeoutMs: 500,
  retryInitialMs: 10,
  retryMaxMs: 40,
};
const deps = { clock: systemClock, logger: nullLogger };

function pool(base: FactoryBase, opts: Partial<PoolOptions> = {}) {
  const p = new CachingFactory(base, { ...OPTS, ...opts }, deps);
  p.start();
  return p;
}

describe('CachingFactory (pool state machine)', () => {
  it('fills to its size and hands out each VM once, refilling behind it', async () => {
    const base = new FakeBase();
    const p = pool(base);
    await p.waitReady(2, 1000);
    const a = await p.getBaseVM();
    const b = await p.getBaseVM();
    assert.notEqual(a.id, b.id);
    await p.waitReady(2, 1000);
    assert.equal(p.status().hits, 2);
    assert.ok(!p.status().idle.some((v) => v.id === a.id || v.id === b.id), 'a VM handed out never returns');
    await p.close();
  });

  it('never boots more than maxParallelBoots at once', async () => {
    const base = new FakeBase(30);
    const p = pool(base, { size: 4, maxParallelBoots: 1 });
    await systemClock.sleep(10);
    assert.equal(p.status().booting, 1);
    await p.close();
  });

  it('keeps serving and retries with backoff when boots fail, then recovers', async () => {
    const base = new FakeBase();
    base.failing = true;
    const p = pool(base);
    await systemClock.sleep(80);
    const s = p.status();
    assert.ok(s.bootFailures >= 2, `failures counted (${s.bootFailures})`);
    assert.match(s.lastError!, /bad kernel/);
    assert.ok(s.nextRetryAt !== null);
    // Backoff: 10, 20, 40, 40 ms... so in 80 ms far fewer than the 16 boots an unthrottled loop would make.
    assert.ok(base.boots < 10, `backoff throttles retries (${base.boots} boots)`);
    base.failing = false;
    await p.waitReady(2, 1000);
    assert.equal(p.status().consecutiveFailures, 0);
    assert.equal(p.status().lastError, null);
    await p.close();
  });

  it('makes a waiting request fail after the acquire timeout with the boot error, and stays open', async () => {
    const base = new FakeBase();
    base.failing = true;
    const p = pool(base, { acquireTimeoutMs: 60 });
    await assert.rejects(
      p.getBaseVM(),
      (e) => isVmcError(e, 'VMC_ERR_CACHE_TIMEOUT') && /bad kernel/.test(e.message),
    );
    base.failing = false;
    const vm = await p.getBaseVM();
    assert.ok(vm.id);
    await p.close();
  });

  it('serves waiters from the next boot when empty', async () => {
    const base = new FakeBase(20);
    const p = pool(base, { size: 1, maxParallelBoots: 3 });
    const got = await Promise.all([p.getBaseVM(), p.getBaseVM(), p.getBaseVM()]);
    assert.equal(new Set(got.map((v) => v.id)).size, 3, 'no VM is given to two requests');
    await p.close();
  });

  it('replaces dead idle VMs and never hands one out', async () => {
    const base = new FakeBase();
    const p = pool(base, { healthIntervalMs: 10_000 });
    await p.waitReady(2, 1000);
    const [first] = base.made;
    first!.alive_ = false; // killed between health checks
    const vm = await p.getBaseVM();
    assert.notEqual(vm.id, first!.id);
    assert.ok(first!.destroyed);
    await p.close();
  });

  it('replaces idle VMs older than max age', async () => {
    const base = new FakeBase();
    const p = pool(base, { maxAgeMs: 30, healthIntervalMs: 15 });
    await p.waitReady(2, 1000);
    const firstIds = p.status().idle.map((v) => v.id);
    for (const v of base.made) v.record.createdAt -= 1000;
    await systemClock.sleep(100);
    await p.waitReady(2, 1000);
    assert.ok(p.status().idle.every((v) => !firstIds.includes(v.id)));
    assert.ok(base.made.slice(0, 2).every((v) => v.destroyed));
    await p.close();
  });

  it('close stops idle VMs, fails waiters, and refuses later requests', async () => {
    const base = new FakeBase(50);
    const p = pool(base, { size: 1 });
    await p.waitReady(1, 1000);
    const idle = base.made[0]!;
    await p.getBaseVM(); // takes the only one; a refill is booting
    const waiting = assert.rejects(p.getBaseVM(), (e) => isVmcError(e, 'VMC_ERR_CACHE_CLOSED'));
    await p.close();
    await waiting;
    await assert.rejects(p.getBaseVM(), (e) => isVmcError(e, 'VMC_ERR_CACHE_CLOSED'));
    assert.equal(idle.destroyed, false, 'a handed-out VM is not touched');
    assert.ok(
      base.made.slice(1).every((v) => v.destroyed),
      'VMs that finished booting after close are stopped',
    );
  });
});
