import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import type { FactoryBase } from '../../../src/factory/base.js';
import { RemoteCacheFactory } from '../../../src/factory/remote-cache.js';
import { systemClock } from '../../../src/platform/clock.js';
import { runCommand } from '../../../src/platform/command.js';
import { nullLogger } from '../../../src/platform/logger.js';
import { CacheServer } from '../../../src/server/cache-server.js';
import type { Vm } from '../../../src/vm/vm.js';
import { instantPool, instantVms } from '../../helpers/instant-vms.js';

/** Socket paths must stay under 107 bytes: a short directory under the system temp directory. */
const dir = mkdtempSync(join(tmpdir(), 'vmc-st-'));
after(() => rmSync(dir, { recursive: true, force: true }));
const deps = {
  paths: { runDir: dir, imageDir: '/img', cacheDir: dir },
  clock: systemClock,
  logger: nullLogger,
  run: runCommand,
};

/** Instant VMs whose QEMU says `states[i]` (the i-th VM booted); `dead` ones have no process, `hung` never answer. */
function vmsSaying(states: string[]): FactoryBase {
  const base = instantVms(dir);
  let i = 0;
  return {
    ...base,
    getBaseVM: async () => {
      const vm = (await base.getBaseVM()) as unknown as { alive: () => boolean; qmp: unknown };
      const state = states[i++] ?? 'paused';
      vm.alive = () => state !== 'dead';
      vm.qmp = {
        // As QmpClient does: a command unanswered within its timeout rejects.
        execute: (_cmd: string, _args: unknown, timeoutMs: number) =>
          state === 'hung'
            ? new Promise((_, reject) => setTimeout(() => reject(new Error('QMP timeout')), timeoutMs))
            : Promise.resolve({ status: state }),
      };
      return vm as unknown as Vm;
    },
  };
}

describe('Status RPC', () => {
  it("reports each idle VM's state as its QEMU tells it, not an assumed 'paused'", async () => {
    const states = ['paused', 'running', 'dead', 'hung'];
    const pool = instantPool(vmsSaying(states), states.length, states.length);
    const endpoint = join(dir, 'cache.sock');
    const server = new CacheServer(
      pool,
      { endpoint, leaseTimeoutMs: 60_000, agentDialTimeoutMs: 1_000, metricsEndpoint: '' },
      deps,
      null,
    );
    await server.start();
    try {
      await pool.waitReady(states.length, 5_000);
      const remote = await RemoteCacheFactory.connect(endpoint, deps);
      try {
        const t0 = performance.now();
        const s = await remote.serverStatus();
        assert.ok(performance.now() - t0 < 1_000, 'a hung QEMU does not hold the answer');
        assert.deepEqual(s.vmstatus.map((v) => v.state).sort(), ['dead', 'paused', 'running', 'unknown']);
        assert.equal(s.target, states.length);
      } finally {
        await remote.close();
      }
    } finally {
      await server.stop();
    }
  });
});
