import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { eventLine, intervalMs, runcStats } from '../../../../src/cli/runtime/events.js';
import { isVmcError } from '../../../../src/errors.js';
import type { CgroupStats } from '../../../../src/protocol/agent/messages.js';

const stats: CgroupStats = {
  memory: {
    current: 3_000_000,
    max: null,
    peak: 4_000_000,
    stat: { anon: 1_000, file: 2_000 },
    events: { max: 1, oom: 2, oom_kill: 1 },
  },
  cpu: {
    usage_usec: 1_500,
    user_usec: 1_000,
    system_usec: 500,
    nr_periods: 7,
    nr_throttled: 3,
    throttled_usec: 40,
  },
  pids: { current: 2, max: 50 },
  procs: [1, 7],
};

describe("events: runc's JSON from a guest cgroup", () => {
  it('maps cgroup v2 files as runc does (ns for CPU, bytes for memory, memory.stat as raw)', () => {
    const d = runcStats(stats) as {
      cpu: { usage: Record<string, number>; throttling: Record<string, number> };
      memory: {
        cache: number;
        usage: Record<string, unknown>;
        raw: unknown;
        event_count: Record<string, number>;
      };
      pids: Record<string, number>;
    };
    assert.deepEqual(d.cpu.usage, { total: 1_500_000, kernel: 500_000, user: 1_000_000 });
    assert.deepEqual(d.cpu.throttling, { periods: 7, throttledPeriods: 3, throttledTime: 40_000 });
    assert.equal(d.memory.cache, 2_000);
    assert.equal(d.memory.usage.usage, 3_000_000);
    assert.equal(d.memory.usage.max, 4_000_000);
    assert.equal(d.memory.usage.failcnt, 1);
    assert.deepEqual(d.memory.raw, { anon: 1_000, file: 2_000 });
    assert.equal(d.memory.event_count.oom_kill, 1);
    assert.deepEqual(d.pids, { current: 2, limit: 50 });
  });

  it('writes "no limit" as math.MaxUint64 exactly, as runc does', () => {
    const line = eventLine('stats', 'c1', runcStats(stats));
    assert.match(line, /"usage":\{"limit":18446744073709551615,"usage":3000000/);
    assert.match(line, /^\{"type":"stats","id":"c1","data":\{"cpu":/);
    assert.equal(eventLine('oom', 'c1'), '{"type":"oom","id":"c1"}');
    const withLimit = eventLine(
      'stats',
      'c1',
      runcStats({ ...stats, memory: { ...stats.memory, max: 1024 } }),
    );
    assert.equal(
      (JSON.parse(withLimit) as { data: { memory: { usage: { limit: number } } } }).data.memory.usage.limit,
      1024,
    );
  });

  it("reads runc's --interval durations and refuses others", () => {
    assert.equal(intervalMs('5s'), 5_000);
    assert.equal(intervalMs('250ms'), 250);
    assert.equal(intervalMs('1m'), 60_000);
    for (const bad of ['5', '0s', '10ms', '2h', 'fast'])
      assert.throws(
        () => intervalMs(bad),
        (e) => isVmcError(e, 'VMC_ERR_CLI_USAGE'),
        bad,
      );
  });
});
