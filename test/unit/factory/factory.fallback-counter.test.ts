import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { defaultVmSpec } from '../../../src/config/defaults.js';
import { isVmcError } from '../../../src/errors.js';
import type { FactoryBase } from '../../../src/factory/base.js';
import { VmFactory } from '../../../src/factory/factory.js';
import { FallbackCounter } from '../../../src/factory/metrics.js';
import { systemClock } from '../../../src/platform/clock.js';
import { runCommand } from '../../../src/platform/command.js';
import { nullLogger } from '../../../src/platform/logger.js';
import type { Vm } from '../../../src/vm/vm.js';

const dir = mkdtempSync(join(tmpdir(), 'vmc-vf-'));
after(() => rmSync(dir, { recursive: true, force: true }));

/** A base that only counts what it is asked for: its VMs never exist (getBaseVM fails). */
class CountingBase implements FactoryBase {
  asked = 0;
  config() {
    return defaultVmSpec('/img', 'tcg');
  }
  async getBaseVM(): Promise<Vm> {
    this.asked++;
    throw new Error('no VM in this test');
  }
  async close() {}
}

const deps = {
  paths: { runDir: dir, imageDir: '/img', cacheDir: dir },
  clock: systemClock,
  logger: nullLogger,
  run: runCommand,
  // Never starts QEMU: a direct boot in these tests is aborted before it spawns, and this proves it.
  spawner: async () => assert.fail('no QEMU in unit tests'),
};

describe('VmFactory (the composer) and its metrics sink', () => {
  it('counts a config mismatch in the injected sink, by field, and boots directly instead of asking the base', async () => {
    const base = new CountingBase();
    const fallbacks = new FallbackCounter();
    const f = new VmFactory(base, { ...deps, metrics: fallbacks });
    const requested = { ...base.config(), machine: 'pc', kernelParams: ['quiet'] };
    // An aborted signal stops the direct boot before it spawns anything: only the decision is under test.
    await assert.rejects(f.getVM(requested, AbortSignal.abort()), (e) =>
      isVmcError(e, 'VMC_ERR_VM_INTERRUPTED'),
    );
    assert.equal(fallbacks.total, 1);
    assert.deepEqual(Object.fromEntries(fallbacks.byField), { machine: 1, kernelParams: 1 });
    assert.equal(base.asked, 0, 'the base is not asked for a VM it cannot provide');
  });

  it('counts nothing when the request matches the base (size differences are grown, not fallen back)', async () => {
    const base = new CountingBase();
    const fallbacks = new FallbackCounter();
    const f = new VmFactory(base, { ...deps, metrics: fallbacks });
    await assert.rejects(f.getVM({ ...base.config(), cpus: 2, memoryMiB: 1024 }), /no VM in this test/);
    assert.equal(fallbacks.total, 0);
    assert.equal(base.asked, 1);
  });
});
