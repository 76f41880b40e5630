import assert from 'node:assert/strict';
import { rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { CachingFactory } from '../../src/factory/cache.js';
import { DirectFactory } from '../../src/factory/direct.js';
import { vmDirsLeft, vmEnv } from '../helpers/vm-env.js';

describe('cache pool with real QEMU boots that fail for a while', () => {
  const env = vmEnv();
  after(() => env.cleanup());

  it('retries failed boots with backoff, reports them, and recovers once the kernel is fixed', async () => {
    const kernel = join(env.runDir, 'kernel');
    const bad = join(env.runDir, 'not-a-kernel');
    writeFileSync(bad, 'garbage');
    symlinkSync(bad, kernel); // QEMU exits at once: "linux kernel too old to load a ram disk" or similar
    const pool = new CachingFactory(
      new DirectFactory({ ...env.spec, kernel }, env.deps),
      {
        size: 1,
        maxParallelBoots: 1,
        maxAgeMs: 0,
        healthIntervalMs: 1_000,
        acquireTimeoutMs: 1_000,
        retryInitialMs: 200,
        retryMaxMs: 400,
      },
      { clock: env.deps.clock, logger: env.deps.logger },
    );
    pool.start();
    try {
      await new Promise((r) => setTimeout(r, 1_500));
      const s = pool.status();
      assert.ok(s.bootFailures >= 2, `boots retried: ${JSON.stringify(s)}`);
      assert.match(s.lastError!, /QEMU exited/);
      await assert.rejects(pool.getBaseVM(), /no VM ready in the cache.*boots are failing.*QEMU exited/s);
      // A retry may be booting at this moment (its directory exists until it fails); a leaked one would stay.
      const deadline = Date.now() + 5_000;
      while (vmDirsLeft(env.runDir).length > 0 && Date.now() < deadline)
        await new Promise((r) => setTimeout(r, 20));
      assert.deepEqual(vmDirsLeft(env.runDir), [], 'failed boots leave nothing behind');
      rmSync(kernel);
      symlinkSync(env.spec.kernel, kernel); // fixed
      await pool.waitReady(1, 120_000);
      assert.equal(pool.status().consecutiveFailures, 0);
      const vm = await pool.getBaseVM();
      await vm.resume();
      assert.equal((await vm.run(['echo', 'recovered'])).stdout.toString(), 'recovered\n');
      await vm.destroy();
    } finally {
      await pool.close();
    }
    assert.deepEqual(vmDirsLeft(env.runDir), []);
  });
});
