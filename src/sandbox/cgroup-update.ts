import type { ResourceUpdate } from '../protocol/control/messages.js';

/** cgroup v2's default CPU period (µs), when `cpu.max` was never set. */
const DEFAULT_PERIOD = 100_000;

/** A container cgroup's limit files as last written (`memory.max`, `cpu.max`, `pids.max`; absent: "max"). */
export type CgroupLimitFiles = Record<string, string>;

/**
 * What `update` writes: the files that change, the limits afterwards, and by how many bytes the VM must grow
 * first (a higher memory limit is hot-plugged, as Kata grows a pod's VM; the VM never shrinks). A field left
 * out stays; null removes the limit ("max"); `cpuPeriod` alone keeps the quota.
 */
export function cgroupUpdate(
  current: CgroupLimitFiles,
  r: ResourceUpdate,
): { files: CgroupLimitFiles; next: CgroupLimitFiles; growBytes: number } {
  const files: CgroupLimitFiles = {};
  const value = (v: number | null) => (v === null ? 'max' : String(v));
  if (r.memory !== undefined) files['memory.max'] = value(r.memory);
  if (r.pids !== undefined) files['pids.max'] = value(r.pids);
  if (r.cpuQuota !== undefined || r.cpuPeriod !== undefined) {
    const [quota = 'max', period = String(DEFAULT_PERIOD)] = (current['cpu.max'] ?? '')
      .split(' ')
      .filter(Boolean);
    files['cpu.max'] = `${r.cpuQuota === undefined ? quota : value(r.cpuQuota)} ${r.cpuPeriod ?? period}`;
  }
  const bytes = (v: string | undefined) => (v === undefined || v === 'max' ? 0 : Number(v));
  const before = bytes(current['memory.max']);
  const after = r.memory === undefined || r.memory === null ? 0 : r.memory;
  return { files, next: { ...current, ...files }, growBytes: Math.max(0, after - before) };
}
