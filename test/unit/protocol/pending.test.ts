import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { PendingRequests } from '../../../src/protocol/pending.js';
import { ManualClock, observe, settle } from '../../helpers/manual-clock.js';

describe('PendingRequests', () => {
  it('hands a request to its reply by id, once, and stops its timer', async () => {
    const clock = new ManualClock();
    const pending = new PendingRequests<number, string>(clock);
    const a = observe(pending.add(1, 'first', 100, () => new Error('timeout')));
    const b = observe(pending.add(2, 'second', 100, () => new Error('timeout')));
    const taken = pending.take(2);
    assert.equal(taken?.meta, 'second');
    taken?.resolve('two');
    assert.equal(pending.take(2), undefined);
    assert.equal(pending.size, 1);
    await clock.advance(100);
    assert.equal(b.value, 'two');
    assert.equal(a.state, 'rejected');
    assert.equal((a.error as Error).message, 'timeout');
  });

  it('forgets a request at its deadline: a late reply finds nothing', async () => {
    const clock = new ManualClock();
    const pending = new PendingRequests<string, null>(clock);
    const p = observe(pending.add('c1', null, 50, () => new Error('no answer within 50 ms')));
    await clock.advance(49);
    assert.equal(p.state, 'pending');
    await clock.advance(1);
    assert.equal((p.error as Error).message, 'no answer within 50 ms');
    assert.equal(pending.take('c1'), undefined);
    assert.equal(pending.size, 0);
  });

  it('fails every request on failAll, empties the table, and no timer fires after', async () => {
    const clock = new ManualClock();
    const pending = new PendingRequests<number, null>(clock);
    let timeouts = 0;
    const made = [1, 2, 3].map((id) =>
      observe(
        pending.add(id, null, 10, () => {
          timeouts++;
          return new Error('timeout');
        }),
      ),
    );
    const closed = new Error('closed');
    pending.failAll(closed);
    await settle();
    for (const o of made) assert.equal(o.error, closed);
    assert.equal(pending.size, 0);
    await clock.advance(1_000);
    assert.equal(timeouts, 0);
  });
});
