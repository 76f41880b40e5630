import type { VmSpec } from '../hypervisor/types.js';
import type { ContainerConfig } from '../oci/bundle.js';
import type { ContainerExec } from '../protocol/agent/messages.js';

/** cgroup v2 default CPU period (µs) when the bundle gives a quota without one. */
const DEFAULT_CPU_PERIOD = 100_000;

/** The cgroup v2 limits of a container's `linux.resources`, as files of its guest cgroup. */
export function cgroupLimits(
  r: ContainerConfig['resources'],
): NonNullable<ContainerExec['cgroup']>['limits'] {
  const l: NonNullable<ContainerExec['cgroup']>['limits'] = {};
  if (r.memoryLimit) l['memory.max'] = String(r.memoryLimit);
  if (r.cpuQuota) l['cpu.max'] = `${r.cpuQuota} ${r.cpuPeriod ?? DEFAULT_CPU_PERIOD}`;
  if (r.pidsLimit) l['pids.max'] = String(r.pidsLimit);
  return l;
}

/**
 * The VM a sandbox needs, as Kata sizes a pod's VM: the configured size plus the container's memory limit
 * (the composer hot-plugs the difference into a VM from the cache). vCPUs are not added for a CPU quota:
 * a hot-added vCPU takes ~1 s to come online under TCG (measured), and a quota below the VM's vCPUs already
 * holds inside the guest's cgroup.
 */
export function sizeForContainer(spec: VmSpec, r: ContainerConfig['resources']): VmSpec {
  if (!r.memoryLimit) return spec;
  const memoryMiB = spec.memoryMiB + Math.ceil(r.memoryLimit / (1024 * 1024));
  return { ...spec, memoryMiB, maxMemoryMiB: Math.max(spec.maxMemoryMiB, memoryMiB) };
}
