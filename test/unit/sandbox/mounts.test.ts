import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isVmcError } from '../../../src/errors.js';
import { mountFlags, planMounts } from '../../../src/sandbox/mounts.js';

const MS_RDONLY = 1;
const MS_NOSUID = 2;
const MS_NODEV = 4;
const MS_NOEXEC = 8;
const MS_REC = 16384;

describe('mount plan (OCI mounts → guest mounts and host binds)', () => {
  it('splits options into mount(2) flags and data; later options win; propagation is dropped', () => {
    assert.deepEqual(mountFlags(['nosuid', 'noexec', 'mode=755', 'size=65536k', 'rprivate']), {
      flags: MS_NOSUID | MS_NOEXEC,
      data: 'mode=755,size=65536k',
    });
    assert.deepEqual(mountFlags(['ro', 'rw']), { flags: 0, data: '' });
    assert.deepEqual(mountFlags(['rw', 'ro', 'nodev']), { flags: MS_RDONLY | MS_NODEV, data: '' });
  });

  it("keeps guest file systems, binds host paths through the share, and mounts the guest's cgroup v2 tree", () => {
    const plan = planMounts(
      [
        { destination: '/proc', type: 'proc', source: 'proc', options: [] },
        { destination: '/dev', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'mode=755'] },
        { destination: '/etc/hosts', type: 'bind', source: '/host/hosts', options: ['rbind', 'ro'] },
        { destination: '/data', source: '/host/data', options: ['bind'] },
        { destination: '/sys/fs/cgroup', type: 'cgroup', source: 'cgroup', options: ['ro'] },
      ],
      'c1',
      1 << 20,
      () => true,
    );
    assert.deepEqual(plan.guest, [
      { type: 'proc', source: 'proc', target: '/proc', flags: 0, data: '' },
      { type: 'tmpfs', source: 'tmpfs', target: '/dev', flags: MS_NOSUID, data: 'mode=755' },
      {
        type: 'bind',
        source: 'c1/mounts/2/hosts',
        target: '/etc/hosts',
        flags: MS_REC | MS_RDONLY,
        data: '',
      },
      { type: 'bind', source: 'c1/mounts/3/data', target: '/data', flags: 0, data: '' },
      { type: 'cgroup2', source: 'cgroup2', target: '/sys/fs/cgroup', flags: MS_RDONLY, data: '' },
    ]);
    assert.deepEqual(plan.host, [
      { source: '/host/hosts', shareRel: 'c1/mounts/2/hosts' },
      { source: '/host/data', shareRel: 'c1/mounts/3/data' },
    ]);
    assert.deepEqual(plan.skipped, []);
  });

  it("turns a bind-mounted /dev/shm into a guest tmpfs of the bundle's shm size (as Kata does)", () => {
    const plan = planMounts(
      [{ destination: '/dev/shm', type: 'bind', source: '/run/pod/shm', options: ['rbind'] }],
      'c1',
      8 << 20,
      () => true,
    );
    assert.deepEqual(plan.host, []);
    assert.deepEqual(plan.guest, [
      {
        type: 'tmpfs',
        source: 'shm',
        target: '/dev/shm',
        flags: MS_NOSUID | MS_NODEV | MS_NOEXEC,
        data: `mode=1777,size=${8 << 20}`,
      },
    ]);
  });

  it('rejects a missing bind source and an unsupported type, naming mounts[i]', () => {
    assert.throws(
      () =>
        planMounts(
          [{ destination: '/x', type: 'bind', source: '/nope', options: [] }],
          'c',
          0,
          () => false,
          'b/config.json',
        ),
      (e) =>
        isVmcError(e, 'VMC_ERR_OCI_INVALID') && /b\/config.json: mounts\[0\].source "\/nope"/.test(e.message),
    );
    assert.throws(
      () =>
        planMounts(
          [{ destination: '/x', type: 'ext4', source: '/dev/sda', options: [] }],
          'c',
          0,
          () => true,
        ),
      (e) => isVmcError(e, 'VMC_ERR_OCI_INVALID') && /mounts\[0\].type "ext4"/.test(e.message),
    );
  });
});
