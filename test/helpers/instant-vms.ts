import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { defaultVmSpec } from '../../src/config/defaults.js';
import type { FactoryBase } from '../../src/factory/base.js';
import type { PoolSetMetrics } from '../../src/factory/metrics.js';
import { type PoolEntry, PoolSet } from '../../src/factory/pool-set.js';
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
 * the bench, hostile requests in the tests, fuzzing in the reliability suite. `shape` (default: the built-in
 * 1 vCPU, 512 MiB) is the base's config and its VMs' spec: one such base per pool of a server of several.
 */
export function instantVms(
  dir: string,
  counts: InstantVmCounts = { handed: 0, stopped: 0 },
  shape?: { cpus: number; memoryMiB: number },
): FactoryBase {
  const spec = () => ({
    ...defaultVmSpec('/img', 'tcg'),
    ...(shape && { cpus: shape.cpus, memoryMiB: shape.memoryMiB }),
  });
  return {
    config: spec,
    getBaseVM: async () => {
      const id = newVmId();
      const files = vmFiles(join(dir, 'vm', id));
      mkdirSync(files.dir, { recursive: true });
      const record = {
        version: 1,
        id,
        createdAt: Date.now(),
        spec: spec(),
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
  return instantPools([{ name: 'default', base, min: size, max: size }], parallel, metrics);
}

/**
 * A server's pool set of `pools` (the first the default; each base of its own shape, see {@link instantVms}),
 * as {@link instantPool} otherwise: direct boots, no memory budget, never aged or health-checked.
 */
export function instantPools(
  pools: Array<Omit<PoolEntry, 'kind'>>,
  parallel = 2,
  metrics?: PoolSetMetrics,
): PoolSet {
  return new PoolSet(
    pools.map((p) => ({ ...p, kind: 'direct' as const })),
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
