import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  type PoolView,
  ROUTE_COST_DEFAULTS,
  type Route,
  type RouteCosts,
  route,
} from '../../../src/factory/pool-routing.js';

const small = (ready: number): PoolView => ({ id: 'small', shape: { cpus: 1, memoryMiB: 512 }, ready });
const mid = (ready: number): PoolView => ({ id: 'mid', shape: { cpus: 2, memoryMiB: 768 }, ready });
const big = (ready: number): PoolView => ({ id: 'big', shape: { cpus: 2, memoryMiB: 1024 }, ready });
const tcg = ROUTE_COST_DEFAULTS; // hand-out 303, +1 vCPU 600, +256 MiB 207, cold 8376
/** The pool a route takes, or 'cold'. */
const via = (r: Route) => (r.kind === 'cold' ? 'cold' : r.pool);
const MID = { cpus: 2, memoryMiB: 768 };

describe('route', () => {
  it('the exact shape when it has a ready VM, even when a larger one costs the same', () => {
    const r = route(MID, [small(3), big(3), mid(1)], tcg);
    assert.equal(r.kind, 'exact');
    assert.equal(via(r), 'mid');
    assert.equal(r.costMs, 303);
    assert.match(r.reason, /exact shape 2 vCPU\/768 MiB \(1 ready\)/);
  });

  it('exact empty: a larger shape as is (303 ms) beats growing a smaller one (1110 ms)', () => {
    const r = route(MID, [small(3), big(1), mid(0)], tcg);
    assert.equal(r.kind, 'larger');
    assert.equal(via(r), 'big');
    assert.equal(r.costMs, 303);
  });

  it('no larger one: the smaller shape grown by hot-plug (303 + 600 + 207 = 1110 ms < 8376 ms cold)', () => {
    const r = route(MID, [small(2), mid(0)], tcg);
    assert.equal(via(r), 'small');
    assert.ok(r.kind === 'grow');
    assert.equal(r.addCpus, 1);
    assert.equal(r.addMemoryMiB, 256);
    assert.equal(r.costMs, 1110);
    assert.match(r.reason, /grown by \+1 vCPU \+256 MiB.*1110 ms vs cold boot ~8376 ms/);
  });

  it('memory grows in 256 MiB steps: +1 vCPU and +512 MiB is 303 + 600 + 2 × 207', () => {
    const r = route({ cpus: 2, memoryMiB: 1024 }, [small(1)], tcg);
    assert.equal(r.kind, 'grow');
    assert.equal(r.costMs, 303 + 600 + 414);
  });

  it('nothing ready, or only shapes past the waste bound: cold', () => {
    assert.equal(route(MID, [small(0), mid(0), big(0)], tcg).kind, 'cold');
    const huge: PoolView = { id: 'huge', shape: { cpus: 4, memoryMiB: 4096 }, ready: 5 };
    const r = route({ cpus: 1, memoryMiB: 512 }, [huge], tcg); // 8× the memory
    assert.equal(r.kind, 'cold');
    assert.equal(r.costMs, 8376);
    assert.match(r.reason, /no pool within ×2/);
    // the bound is a parameter
    assert.equal(route({ cpus: 1, memoryMiB: 512 }, [huge], tcg, { maxWaste: 8 }).kind, 'larger');
  });

  it('follows the measured costs: with fast boots (KVM-like) growing loses to a cold boot', () => {
    const kvm: RouteCosts = { handoutMs: 40, growPerCpuMs: 500, growPer256MiBMs: 100, coldBootMs: 450 };
    const r = route(MID, [small(2)], kvm);
    assert.equal(r.kind, 'cold');
    assert.match(r.reason, /cold boot ~450 ms beats shape 1 vCPU\/512 MiB grown/);
    // and a cheap hot-plug wins again
    assert.equal(route(MID, [small(2)], { ...kvm, growPerCpuMs: 200 }).kind, 'grow');
  });

  it('respects the hot-plug headroom and a per-pool hand-out time', () => {
    const capped: PoolView = { ...small(2), maxCpus: 1 };
    assert.equal(route(MID, [capped], tcg).kind, 'cold');
    // a clone pool that hands out in 441 ms loses to a direct one at 303 ms for the same larger shape
    const clones: PoolView = {
      id: 'big-clones',
      shape: { cpus: 2, memoryMiB: 1024 },
      ready: 4,
      handoutMs: 441,
    };
    const r = route(MID, [clones, big(1)], tcg);
    assert.equal(via(r), 'big');
  });

  it('ties: less memory wasted, then more ready, then the pool id', () => {
    const a: PoolView = { id: 'a', shape: { cpus: 2, memoryMiB: 1536 }, ready: 9 };
    const b: PoolView = { id: 'b', shape: { cpus: 2, memoryMiB: 1024 }, ready: 1 };
    assert.equal(via(route(MID, [a, b], tcg)), 'b');
    const c: PoolView = { id: 'c', shape: { cpus: 2, memoryMiB: 1024 }, ready: 3 };
    const r1 = route(MID, [b, c], tcg);
    assert.equal(via(r1), 'c');
    const d: PoolView = { ...c, id: 'd' };
    const r2 = route(MID, [d, c], tcg);
    assert.equal(via(r2), 'c');
  });
});
