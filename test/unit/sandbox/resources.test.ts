import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { defaultVmSpec } from '../../../src/config/defaults.js';
import { parseHostMessage } from '../../../src/protocol/agent/messages.js';
import { cgroupLimits, sizeForContainer } from '../../../src/sandbox/resources.js';

describe('linux.resources in the guest', () => {
  it('maps limits to cgroup v2 files (cpu.max defaults the period to 100 ms)', () => {
    assert.deepEqual(cgroupLimits({ memoryLimit: 64 << 20, cpuQuota: 50_000, pidsLimit: 10 }), {
      'memory.max': String(64 << 20),
      'cpu.max': '50000 100000',
      'pids.max': '10',
    });
    assert.deepEqual(cgroupLimits({ cpuQuota: 20_000, cpuPeriod: 50_000 }), { 'cpu.max': '20000 50000' });
    assert.deepEqual(cgroupLimits({}), {});
  });

  it('grows the VM by the memory limit, as Kata sizes a pod VM; no limit, no change', () => {
    const spec = defaultVmSpec('/img', 'tcg');
    const sized = sizeForContainer(spec, { memoryLimit: 100 * 1024 * 1024 + 1 });
    assert.equal(sized.memoryMiB, spec.memoryMiB + 101);
    assert.ok(sized.maxMemoryMiB >= sized.memoryMiB);
    assert.equal(sizeForContainer(spec, {}), spec);
  });

  it('validates the cgroup of a container exec: known files, plain values, an id as name', () => {
    const req = (cgroup: unknown) =>
      parseHostMessage({
        t: 'req',
        id: 1,
        op: 'exec',
        exec: { args: ['x'], container: { root: 'c/rootfs', cgroup } },
      });
    assert.equal(req({ name: 'c1', limits: { 'memory.max': '1048576', 'cpu.max': 'max 100000' } }).ok, true);
    for (const [bad, re] of [
      [{ name: '../x' }, /cgroup.name/],
      [{ name: 'c1', limits: { 'cgroup.procs': '1' } }, /not one of/],
      [{ name: 'c1', limits: { 'memory.max': '1;reboot' } }, /memory.max/],
    ] as const) {
      const r = req(bad);
      assert.equal(r.ok, false);
      assert.match((r as { error: string }).error, re);
    }
  });
});
