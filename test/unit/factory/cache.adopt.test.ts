import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { defaultVmSpec } from '../../../src/config/defaults.js';
import type { FactoryBase } from '../../../src/factory/base.js';
import { CachingFactory } from '../../../src/factory/cache.js';
import { vmFiles } from '../../../src/hypervisor/types.js';
import { nullLogger } from '../../../src/platform/logger.js';
import { identify } from '../../../src/platform/process.js';
import {
  isIdleInPool,
  readRecord,
  VM_RECORD_VERSION,
  type VmRecord,
  writeRecord,
} from '../../../src/vm/record.js';
import type { Vm } from '../../../src/vm/vm.js';
import { ManualClock } from '../../helpers/manual-clock.js';

describe('cache pool: adopted VMs', () => {
  const dir = mkdtempSync(join(tmpdir(), 'vmc-pool-adopt-'));
  after(() => rmSync(dir, { recursive: true, force: true }));
  const self = identify(process.pid)!;

  function vm(id: string): Vm & { destroyed: boolean } {
    const files = vmFiles(join(dir, 'vm', id));
    mkdirSync(files.dir, { recursive: true });
    const record: VmRecord = {
      version: VM_RECORD_VERSION,
      id,
      createdAt: 0,
      spec: defaultVmSpec('/img', 'tcg'),
      files,
      qemu: self,
      owner: self,
      pooledBy: null,
      hotplug: { cpus: 0, memoryMiB: 0 },
    };
    writeRecord(record);
    const v = {
      id,
      record,
      destroyed: false,
      alive: () => true,
      qmp: { execute: async () => ({ status: 'paused' }) },
      destroy: async () => {
        v.destroyed = true;
      },
    };
    return v as unknown as Vm & { destroyed: boolean };
  }

  it('takes adopted VMs as ready (marked idle on disk) up to its size, boots only the rest, serves them first', async () => {
    const clock = new ManualClock();
    let boots = 0;
    const base: FactoryBase = {
      config: () => defaultVmSpec('/img', 'tcg'),
      getBaseVM: async () => {
        boots++;
        return vm(`boot${boots}`);
      },
      close: async () => {},
    };
    const pool = new CachingFactory(
      base,
      {
        size: 2,
        maxParallelBoots: 2,
        maxAgeMs: 0,
        healthIntervalMs: 60_000,
        acquireTimeoutMs: 1_000,
        retryInitialMs: 10,
        retryMaxMs: 10,
      },
      { clock, logger: nullLogger },
    );
    const a = vm('adopted-a');
    const b = vm('adopted-b');
    const c = vm('adopted-c');
    const rest = pool.adopt([a, b, c]);
    assert.deepEqual(
      rest.map((v) => v.id),
      ['adopted-c'],
      'beyond the size: handed back',
    );
    assert.ok(isIdleInPool(readRecord(a.record.files.dir)), 'marked idle in this pool on disk');
    assert.equal(isIdleInPool(readRecord(c.record.files.dir)), false);
    pool.start();
    await clock.advance(1);
    assert.equal(boots, 0, 'the pool is full: nothing booted');
    assert.deepEqual(
      pool.status().idle.map((v) => v.id),
      ['adopted-a', 'adopted-b'],
    );
    assert.equal((await pool.getBaseVM()).id, 'adopted-a');
    await clock.advance(1);
    assert.equal(boots, 1, 'refilled the one handed out');
    assert.ok(isIdleInPool(readRecord(join(dir, 'vm', 'boot1'))), 'booted VMs are marked too');
    await pool.close();
  });
});
