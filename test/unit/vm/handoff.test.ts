import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { defaultVmSpec } from '../../../src/config/defaults.js';
import { isVmcError } from '../../../src/errors.js';
import { vmFiles } from '../../../src/hypervisor/types.js';
import { decodeHandoff, encodeHandoff } from '../../../src/vm/handoff.js';
import { VM_RECORD_VERSION, type VmRecord } from '../../../src/vm/record.js';

const record: VmRecord = {
  version: VM_RECORD_VERSION,
  id: 'abc123',
  createdAt: 1,
  spec: defaultVmSpec('/img', 'tcg'),
  files: vmFiles('/run/vmcache/vm/abc123'),
  qemu: { pid: 42, startTime: 7 },
  owner: { pid: 43, startTime: 8 },
  hotplug: { cpus: 1, memoryMiB: 256 },
};

describe('hand-off blob (GrpcVM.hypervisor)', () => {
  it('carries everything a new owner needs', () => {
    const back = decodeHandoff(encodeHandoff(record));
    assert.deepEqual(back, record);
    assert.equal(back.files.agentSocket, '/run/vmcache/vm/abc123/agent.sock');
  });

  it('refuses unknown versions, non-JSON and incomplete records with a protocol error', () => {
    const bad = [
      Buffer.from('nope'),
      Buffer.from(JSON.stringify({ version: 2, record })),
      Buffer.from(JSON.stringify({ version: 1, record: { ...record, qemu: null } })),
    ];
    for (const b of bad)
      assert.throws(
        () => decodeHandoff(b),
        (e) => isVmcError(e, 'VMC_ERR_CACHE_PROTOCOL'),
      );
  });
});
