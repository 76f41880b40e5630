import { CPU_PERIOD_RANGE, CPU_QUOTA_RANGE, MAX_PIDS_LIMIT, MIN_MEMORY_LIMIT } from './bundle.js';
import type { At } from './validate.js';

/**
 * New limits for a container's guest cgroup (`update`): a field left out stays as it is, null removes the
 * limit. Memory in bytes, CPU quota and period in µs (cgroup v2 `cpu.max`).
 */
export interface ResourceUpdate {
  memory?: number | null;
  cpuQuota?: number | null;
  cpuPeriod?: number;
  pids?: number | null;
}

/** Fields of an OCI LinuxResources object that vmcache applies; the others are named to `warn`. */
const APPLIED = { memory: ['limit'], cpu: ['quota', 'period'], pids: ['limit'] } as const;

/** `-1` (or a negative number) removes a limit, as in runc; anything else must lie in the kernel's range. */
function limit(a: At, [lo, hi]: readonly [number, number], unit: string): number | null {
  const v = a.int();
  if (v < 0) return null;
  if (v < lo || v > hi) a.fail(`from ${lo} to ${hi} ${unit}, or -1 for no limit`);
  return v;
}

/**
 * The update an OCI LinuxResources object asks for (runc's `update -r FILE`, the shim's UpdateTaskRequest,
 * which is what CRI's UpdateContainerResources sends): memory.limit, cpu.quota and cpu.period, pids.limit.
 * Fields vmcache does not apply (the VM's own limits cover them) are named to `warn`; a bad value throws
 * naming its field under `a`.
 */
export function resourceUpdateOf(a: At, warn: (msg: string) => void): ResourceUpdate {
  const o = a.object();
  const r: ResourceUpdate = {};
  const ignored: string[] = [];
  for (const [k, v] of Object.entries(o)) {
    const applied = (APPLIED as Record<string, readonly string[]>)[k];
    if (!applied) ignored.push(k);
    else if (v && typeof v === 'object')
      for (const f of Object.keys(v)) if (!applied.includes(f)) ignored.push(`${k}.${f}`);
  }
  if (ignored.length) warn(`not applied by vmcache (the VM's own limits cover them): ${ignored.join(', ')}`);
  const mem = a.get('memory').get('limit');
  if (mem.exists()) r.memory = limit(mem, [MIN_MEMORY_LIMIT, Number.MAX_SAFE_INTEGER], 'bytes');
  const quota = a.get('cpu').get('quota');
  if (quota.exists()) r.cpuQuota = limit(quota, CPU_QUOTA_RANGE, 'µs');
  const period = a.get('cpu').get('period');
  if (period.exists() && period.uint() > 0) r.cpuPeriod = limit(period, CPU_PERIOD_RANGE, 'µs') ?? undefined;
  const pids = a.get('pids').get('limit');
  if (pids.exists()) r.pids = limit(pids, [1, MAX_PIDS_LIMIT], 'processes');
  return r;
}
