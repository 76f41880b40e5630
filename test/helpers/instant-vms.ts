import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { defaultVmSpec } from '../../src/config/defaults.js';
import type { FactoryBase } from '../../src/factory/base.js';
import type { PoolSetMetrics } from '../../src/factory/metrics.js';
import { PoolSet } from '../../src/factory/pool-set.js';
import { vmFiles } from '../../src/hypervisor/types.js';
import { systemClock } from '../../src/platform/clock.js';
import { nullLogger } from '../../src/platform/logger.js';
import { newVmId, type Vm } from '../../src/vm/vm.js';

/** How many instant VMs were handed over (detached by the server) and stopped. */
export interface InstantVmCounts {
  handed: number;
  stopped: number;
}

/**
 * A factory base whose "VMs" are instant fakes with a real state directory under `dir`: just what the cache
 * pool and server touch (record, detach, alive, QMP status, destroy). For the server's own path: RPC latency in
 * the bench, hostile requests in the tests, fuzzing in the reliability suite.
 */
export function instantVms(dir: string, counts: InstantVmCounts = { handed: 0, stopped: 0 }): FactoryBase {
  return {
    config: () => defaultVmSpec('/img', 'tcg'),
    getBaseVM: async () => {
      const id = newVmId();
      const files = vmFiles(join(dir, 'vm', id));
      mkdirSync(files.dir, { recursive: true });
      const record = {
        version: 1,
        id,
        createdAt: Date.now(),
        spec: defaultVmSpec('/img', 'tcg'),
        files,
        qemu: { pid: process.pid, startTime: 0 },
        owner: null,
        hotplug: { cpus: 0, memoryMiB: 0 },
      };
      return {
        id,
        record,
        detach: () => void counts.handed++,
        alive: () => true,
        qmp: { execute: async () => ({ status: 'paused' }) },
        destroy: async () => void counts.stopped++,
      } as unknown as Vm;
    },
    close: async () => {},
  };
}

/**
 * A server's pool set of one pool (`default`, fixed at `size`, as Kata's) of instant VMs from `base`, refilled
 * `parallel` at a time, never aged or health-checked.
 */
export function instantPool(
  base: FactoryBase,
  size: number,
  parallel = 2,
  metrics?: PoolSetMetrics,
): PoolSet {
  return new PoolSet(
    [{ name: 'default', base, kind: 'direct', min: size, max: size }],
    {
      pool: {
        maxParallelBoots: parallel,
        maxAgeMs: 0,
        healthIntervalMs: 60_000,
        acquireTimeoutMs: 5_000,
        retryInitialMs: 10,
        retryMaxMs: 100,
      },
      budgetMiB: 0,
    },
    { clock: systemClock, logger: nullLogger, metrics },
  );
}
