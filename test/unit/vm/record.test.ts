import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { defaultVmSpec } from '../../../src/config/defaults.js';
import { isVmcError } from '../../../src/errors.js';
import { vmFiles } from '../../../src/hypervisor/types.js';
import { readRecord, VM_RECORD_VERSION, type VmRecord, writeRecord } from '../../../src/vm/record.js';

describe('VM record on disk', () => {
  const root = mkdtempSync(join(tmpdir(), 'vmc-record-'));
  after(() => rmSync(root, { recursive: true, force: true }));
  const dir = (id: string) => {
    const d = join(root, id);
    mkdirSync(d, { recursive: true });
    return d;
  };

  it('is written whole and read back', () => {
    const files = vmFiles(dir('abc123'));
    const r: VmRecord = {
      version: VM_RECORD_VERSION,
      id: 'abc123',
      createdAt: 1,
      spec: defaultVmSpec('/img', 'tcg'),
      files,
      qemu: { pid: 42, startTime: 7 },
      owner: null,
      hotplug: { cpus: 0, memoryMiB: 0 },
    };
    writeRecord(r);
    assert.deepEqual(readRecord(files.dir), r);
  });

  it('missing is "not found"; damaged is "invalid", naming the file and the field', () => {
    assert.throws(
      () => readRecord(dir('none')),
      (e) => isVmcError(e, 'VMC_ERR_VM_NOT_FOUND'),
    );
    const notJson = dir('notjson');
    writeFileSync(join(notJson, 'vm.json'), '{"version":');
    assert.throws(
      () => readRecord(notJson),
      (e) => isVmcError(e, 'VMC_ERR_VM_RECORD_INVALID') && e.message.includes(join(notJson, 'vm.json')),
    );
    const noQemu = dir('noqemu');
    writeFileSync(join(noQemu, 'vm.json'), JSON.stringify({ version: VM_RECORD_VERSION, id: 'noqemu' }));
    assert.throws(
      () => readRecord(noQemu),
      (e) =>
        isVmcError(e, 'VMC_ERR_VM_RECORD_INVALID') &&
        e.details.field === 'qemu' &&
        e.message === `${join(noQemu, 'vm.json')}: invalid VM record (qemu)`,
    );
  });
});
