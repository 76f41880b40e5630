import { isVmcError, VmcError } from '../../errors.js';
import type { CgroupStats } from '../../protocol/agent/messages.js';
import { effectiveStatus } from '../../sandbox/state-store.js';
import { connectShim, type RuntimeContext, requireStatus } from './common.js';

/** Options of `events` (runc's). */
interface EventsOptions {
  stats?: boolean;
  interval?: string;
}

/** What a limit of "max" reads as in runc's JSON (cgroup v2: math.MaxUint64). */
const UNLIMITED = '18446744073709551615';
/** Stands for UNLIMITED until the JSON text is made (a JS number cannot hold it exactly). */
const UNLIMITED_MARK = '\u0000max\u0000';

/**
 * runc's `types.Stats` (what `runc events` prints under `data`) from a guest cgroup's files, as runc reads them
 * under cgroup v2: CPU times in ns, memory usage/limit/peak in bytes, `memory.stat` as `raw`.
 */
export function runcStats(s: CgroupStats): Record<string, unknown> {
  const ns = (k: string) => (s.cpu[k] ?? 0) * 1000;
  const ev = s.memory.events;
  return {
    cpu: {
      usage: { total: ns('usage_usec'), kernel: ns('system_usec'), user: ns('user_usec') },
      throttling: {
        periods: s.cpu.nr_periods ?? 0,
        throttledPeriods: s.cpu.nr_throttled ?? 0,
        throttledTime: ns('throttled_usec'),
      },
    },
    cpuset: {},
    memory: {
      cache: s.memory.stat.file ?? 0,
      usage: {
        limit: s.memory.max ?? UNLIMITED_MARK,
        usage: s.memory.current,
        max: s.memory.peak ?? 0,
        failcnt: ev.max ?? 0,
      },
      swap: { limit: 0, failcnt: 0 },
      kernel: { limit: 0, failcnt: 0 },
      kernelTCP: { limit: 0, failcnt: 0 },
      raw: s.memory.stat,
      event_count: {
        low: ev.low ?? 0,
        high: ev.high ?? 0,
        max: ev.max ?? 0,
        oom: ev.oom ?? 0,
        oom_kill: ev.oom_kill ?? 0,
      },
    },
    pids: { current: s.pids.current, limit: s.pids.max ?? 0 },
    blkio: {},
    hugetlb: {},
    intel_rdt: {},
    network_interfaces: null,
  };
}

/** One line of `events`: runc's `{"type":..., "id":..., "data":...}`. */
export function eventLine(type: 'stats' | 'oom', id: string, data?: Record<string, unknown>): string {
  const text = JSON.stringify({ type, id, ...(data ? { data } : {}) });
  return text.replaceAll(JSON.stringify(UNLIMITED_MARK), UNLIMITED);
}

/** runc's `--interval` (Go durations such as `5s`, `500ms`, `1m`). */
export function intervalMs(v: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m)$/.exec(v.trim());
  const ms = m ? Number(m[1]) * { ms: 1, s: 1000, m: 60_000 }[m[2] as 'ms' | 's' | 'm'] : Number.NaN;
  if (!(ms >= 100 && ms <= 3_600_000))
    throw new VmcError(
      'VMC_ERR_CLI_USAGE',
      `--interval must be a duration from 100ms to 1h (e.g. 5s), got ${JSON.stringify(v)}`,
    );
  return ms;
}

async function statsOf(ctx: RuntimeContext, id: string, owner: string): Promise<CgroupStats> {
  const c = await connectShim(ctx, owner);
  try {
    return await c.request<CgroupStats>({ t: 'stats', name: id });
  } finally {
    c.close();
  }
}

/**
 * `vmcache events [--stats] [--interval 5s] ID`: the container's guest cgroup stats in runc's JSON, once
 * (`--stats`) or every interval until it stops, with an `oom` event whenever the kernel killed for memory.
 */
export async function events(ctx: RuntimeContext, id: string, o: EventsOptions): Promise<number> {
  const every = intervalMs(o.interval ?? '5s');
  const state = requireStatus(ctx, id, 'events', ['running', 'paused']);
  const owner = state.sandboxId ?? id;
  const print = (line: string) => process.stdout.write(`${line}\n`);
  let s = await statsOf(ctx, id, owner);
  if (o.stats) {
    print(eventLine('stats', id, runcStats(s)));
    return 0;
  }
  let kills = s.memory.events.oom_kill ?? 0;
  for (;;) {
    print(eventLine('stats', id, runcStats(s)));
    await ctx.clock.sleep(every);
    if (!['running', 'paused'].includes(effectiveStatus(ctx.store.read(id)))) return 0;
    try {
      s = await statsOf(ctx, id, owner);
    } catch (err) {
      // It stopped between the check and the request: the stream ends with it. The shim knows first: it
      // refuses (its life is `stopped`) while it destroys the VM, before its record says so.
      if (isVmcError(err, 'VMC_ERR_INVALID_STATE')) return 0;
      if (!['running', 'paused'].includes(effectiveStatus(ctx.store.read(id)))) return 0;
      throw err;
    }
    const k = s.memory.events.oom_kill ?? 0;
    if (k > kills) print(eventLine('oom', id));
    kills = k;
  }
}
