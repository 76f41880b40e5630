import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isVmcError } from '../../../src/errors.js';
import { BootSlots } from '../../../src/factory/boot-slots.js';
import { observe, settle } from '../../helpers/manual-clock.js';

const closed = (e: unknown) => isVmcError(e, 'VMC_ERR_CACHE_CLOSED');

describe('BootSlots (a FIFO counting semaphore)', () => {
  it('never holds more than its limit: holders, counted as running, and the rest wait', async () => {
    const slots = new BootSlots(2);
    let held = 0;
    let peak = 0;
    const order: number[] = [];
    // Ten boots that each hold their slot for a few turns of the event loop.
    await Promise.all(
      Array.from({ length: 10 }, async (_, i) => {
        const release = await slots.acquire();
        held++;
        peak = Math.max(peak, held);
        assert.ok(slots.running <= slots.limit, `${slots.running} running`);
        order.push(i);
        await settle();
        held--;
        release();
      }),
    );
    assert.equal(peak, 2);
    assert.equal(order.length, 10);
    assert.equal(slots.running, 0, 'every slot given back');
    assert.equal(slots.waiting, 0);
  });

  it('grants in the order asked (FIFO), one per release', async () => {
    const slots = new BootSlots(1);
    const first = await slots.acquire();
    const granted: string[] = [];
    const waits = ['a', 'b', 'c'].map((name) =>
      slots.acquire().then((release) => {
        granted.push(name);
        return release;
      }),
    );
    await settle();
    assert.deepEqual(granted, [], 'nothing granted while the slot is held');
    assert.equal(slots.waiting, 3);
    first();
    const a = await waits[0]!;
    await settle();
    assert.deepEqual(granted, ['a'], 'one release, one grant');
    assert.equal(slots.running, 1, 'a release handed over is still one slot in use');
    a();
    const b = await waits[1]!;
    b();
    const c = await waits[2]!;
    assert.deepEqual(granted, ['a', 'b', 'c']);
    c();
    assert.equal(slots.running, 0);
  });

  it('release is idempotent: calling it twice frees one slot', async () => {
    const slots = new BootSlots(1);
    const r1 = await slots.acquire();
    const w1 = observe(slots.acquire());
    const w2 = observe(slots.acquire());
    r1();
    r1();
    await settle();
    assert.equal(w1.state, 'resolved');
    assert.equal(w2.state, 'pending', 'the second call did not grant another');
    assert.equal(slots.running, 1);
    assert.equal(slots.waiting, 1);
    // With nobody waiting, a second call does not drive the count below zero either.
    const solo = new BootSlots(1);
    const r = await solo.acquire();
    r();
    r();
    assert.equal(solo.running, 0);
    const again = await solo.acquire();
    assert.equal(solo.running, 1);
    assert.equal(observe(solo.acquire()).state, 'pending', 'still a limit of one');
    again();
  });

  it('an aborted waiter leaves the queue, rejects with VMC_ERR_CACHE_CLOSED and takes no slot', async () => {
    const slots = new BootSlots(1);
    const holder = await slots.acquire();
    const ac = new AbortController();
    const aborted = observe(slots.acquire(ac.signal));
    const next = observe(slots.acquire());
    assert.equal(slots.waiting, 2);
    ac.abort();
    await settle();
    assert.equal(aborted.state, 'rejected');
    assert.ok(closed(aborted.error), `got ${aborted.error}`);
    assert.equal(slots.waiting, 1, 'removed from the queue');
    holder();
    await settle();
    assert.equal(next.state, 'resolved', 'the slot skips the aborted waiter');
    assert.equal(slots.running, 1);
    assert.equal(slots.waiting, 0);
    // Aborting after the grant changes nothing.
    const late = new AbortController();
    const third = observe(slots.acquire(late.signal));
    (next.value as () => void)();
    await settle();
    assert.equal(third.state, 'resolved');
    late.abort();
    await settle();
    assert.equal(slots.running, 1);
    (third.value as () => void)();
    assert.equal(slots.running, 0);
  });

  it('acquire with an already-aborted signal rejects at once, even with a slot free', async () => {
    const slots = new BootSlots(2);
    const ac = new AbortController();
    ac.abort();
    await assert.rejects(slots.acquire(ac.signal), closed);
    assert.equal(slots.running, 0);
    assert.equal(slots.waiting, 0);
  });

  it('refuses a limit that is not a whole number of at least 1', () => {
    for (const bad of [0, -1, 1.5, Number.NaN, Number.POSITIVE_INFINITY])
      assert.throws(() => new BootSlots(bad), RangeError, String(bad));
    assert.equal(new BootSlots(3).limit, 3);
  });
});
