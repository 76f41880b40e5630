import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { cgroupUpdate } from '../../../src/sandbox/cgroup-update.js';

describe('cgroupUpdate (what `update` writes)', () => {
  it('writes only what changes; null removes a limit; a period alone keeps the quota', () => {
    const now = { 'memory.max': String(64 * 2 ** 20), 'cpu.max': '50000 100000' };
    assert.deepEqual(cgroupUpdate(now, { pids: 10 }).files, { 'pids.max': '10' });
    assert.deepEqual(cgroupUpdate(now, { cpuPeriod: 200_000 }).files, { 'cpu.max': '50000 200000' });
    assert.deepEqual(cgroupUpdate({}, { cpuQuota: 20_000 }).files, { 'cpu.max': '20000 100000' });
    assert.deepEqual(cgroupUpdate(now, { cpuQuota: null, memory: null }).files, {
      'memory.max': 'max',
      'cpu.max': 'max 100000',
    });
    assert.deepEqual(cgroupUpdate(now, { pids: 10 }).next, { ...now, 'pids.max': '10' });
  });

  it('grows the VM by what the memory limit rises, never shrinks it', () => {
    const now = { 'memory.max': String(64 * 2 ** 20) };
    assert.equal(cgroupUpdate(now, { memory: 192 * 2 ** 20 }).growBytes, 128 * 2 ** 20);
    assert.equal(cgroupUpdate(now, { memory: 32 * 2 ** 20 }).growBytes, 0);
    assert.equal(cgroupUpdate(now, { memory: null }).growBytes, 0);
    // No limit before: the VM was sized without one, so all of the new limit is added.
    assert.equal(cgroupUpdate({}, { memory: 100 * 2 ** 20 }).growBytes, 100 * 2 ** 20);
    assert.equal(cgroupUpdate({ 'memory.max': 'max' }, { pids: 5 }).growBytes, 0);
  });
});
