import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { PhaseRecorder } from '../../../src/platform/phases.js';

/** A clock whose monotonic time is set by hand. */
function handClock(t = 0) {
  return {
    t,
    monotonic() {
      return this.t;
    },
  };
}

describe('PhaseRecorder', () => {
  it('records laps as the time since the previous lap, in order, adding up to the total', () => {
    const clock = handClock(100);
    const rec = new PhaseRecorder(clock);
    clock.t = 103;
    assert.equal(rec.lap('rpc'), 3);
    clock.t = 110.5;
    rec.lap('attach');
    clock.t = 111;
    rec.lap('attach'); // a name may come again (a retry)
    const r = rec.report();
    assert.deepEqual(r.phases, [
      { name: 'rpc', ms: 3 },
      { name: 'attach', ms: 7.5 },
      { name: 'attach', ms: 0.5 },
    ]);
    assert.equal(r.totalMs, 11);
    assert.equal(rec.elapsed(), 11);
  });

  it('starts where it is told (0: the process start) and keeps figures apart from the laps', () => {
    const clock = handClock(40);
    const rec = new PhaseRecorder(clock, 0);
    rec.figure('start-up', 'guest handling', 1.25, 'guest');
    assert.equal(rec.lap('start-up'), 40);
    assert.deepEqual(rec.report().figures, [
      { phase: 'start-up', name: 'guest handling', ms: 1.25, clock: 'guest' },
    ]);
  });

  it('reports only what came after a mark, and a report is a copy', () => {
    const clock = handClock();
    const rec = new PhaseRecorder(clock);
    clock.t = 5;
    rec.lap('before');
    rec.figure('before', 'x', 1, 'host');
    const mark = rec.mark();
    clock.t = 7;
    rec.lap('after');
    rec.figure('after', 'y', 2, 'guest');
    const r = rec.report(mark);
    assert.deepEqual(r, {
      totalMs: 2,
      phases: [{ name: 'after', ms: 2 }],
      figures: [{ phase: 'after', name: 'y', ms: 2, clock: 'guest' }],
    });
    r.phases[0]!.ms = 99;
    assert.equal(rec.report(mark).phases[0]!.ms, 2);
  });
});
