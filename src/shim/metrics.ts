import type { CgroupStats } from '../protocol/agent/messages.js';
import {
  CPUStat,
  MemoryEvents,
  MemoryStat,
  Metrics,
} from '../protocol/shim/generated/containerd/cgroups/v2/metrics.js';
import type { Any } from '../protocol/shim/generated/google/protobuf/any.js';

/** The type containerd (ctr task metrics, the CRI's container stats) decodes a cgroup v2 Metrics Any by. */
export const METRICS_TYPE_URL = 'io.containerd.cgroups.v2.Metrics';

/** What an unlimited cgroup v2 limit ("max") reads as in containerd's Metrics: the largest uint64. */
const NO_LIMIT = 2n ** 64n - 1n;

const big = (n: number | null | undefined): bigint => BigInt(Math.max(0, Math.trunc(n ?? 0)));
const camel = (k: string) => k.replace(/_([a-z])/g, (_m, c: string) => c.toUpperCase());

/**
 * The fields of `into` (a generated message whose fields are all uint64) that `flat` has under their
 * cgroup file's name (`kernel_stack` → `kernelStack`); cgroup keys the message lacks are left out.
 */
function fill<T extends object>(into: T, flat: Record<string, number>): T {
  const out = into as Record<string, bigint>;
  for (const [k, v] of Object.entries(flat)) {
    const f = camel(k);
    if (typeof out[f] === 'bigint') out[f] = big(v);
  }
  return into;
}

/**
 * A container's guest cgroup stats as containerd's cgroup v2 Metrics (the shape runc's shim reports, read
 * in the guest instead of on the host): memory.current/max/stat/events, cpu.stat, pids. The CRI derives a
 * pod's working set (usage − inactive_file) and CPU use (usage_usec) from it.
 */
export function metricsOf(s: CgroupStats): Any {
  const memory = fill(MemoryStat.create(), s.memory.stat);
  memory.usage = big(s.memory.current);
  memory.usageLimit = s.memory.max === null ? NO_LIMIT : big(s.memory.max);
  const m = Metrics.create({
    pids: { current: big(s.pids.current), limit: s.pids.max === null ? 0n : big(s.pids.max) },
    cpu: fill(CPUStat.create(), s.cpu),
    memory,
    memoryEvents: fill(MemoryEvents.create(), s.memory.events),
  });
  return { typeUrl: METRICS_TYPE_URL, value: Buffer.from(Metrics.encode(m).finish()) };
}
