import { readFileSync } from 'node:fs';
import { VmcError } from '../../errors.js';
import { CPU_PERIOD_RANGE, CPU_QUOTA_RANGE, MAX_PIDS_LIMIT, MIN_MEMORY_LIMIT } from '../../oci/bundle.js';
import { type ResourceUpdate, resourceUpdateOf } from '../../oci/resource-update.js';
import { At } from '../../oci/validate.js';
import { connectShim, type RuntimeContext, requireStatus } from './common.js';

/** Options of `update` (runc's, those vmcache applies). */
interface UpdateOptions {
  resources?: string;
  memory?: string;
  cpuQuota?: string;
  cpuPeriod?: string;
  pidsLimit?: string;
}

/** runc's `-r FILE` (`-` for stdin): a LinuxResources object, read for what vmcache applies. */
function fromFile(file: string, warn: (msg: string) => void): ResourceUpdate {
  const name = file === '-' ? '(stdin)' : file;
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(file === '-' ? 0 : file, 'utf8'));
  } catch (e) {
    throw new VmcError('VMC_ERR_OCI_INVALID', `${name}: not a readable JSON file (${(e as Error).message})`);
  }
  return resourceUpdateOf(new At(json, '', name), (msg) => warn(`${name}: ${msg}`));
}

/** A flag's integer: bytes may have a k, m or g suffix (`512m`, as runc takes them); -1 removes the limit. */
function flag(name: string, v: string, range: readonly [number, number], suffixes = false): number | null {
  const m = /^(-1|\d+)([kmg]?)b?$/i.exec(v.trim());
  const scale = { '': 1, k: 2 ** 10, m: 2 ** 20, g: 2 ** 30 }[(m?.[2] ?? '').toLowerCase()] ?? 1;
  if (!m || (!suffixes && m[2]))
    throw new VmcError('VMC_ERR_CLI_USAGE', `${name} must be an integer, got ${JSON.stringify(v)}`);
  if (m[1] === '-1') return null;
  const n = Number(m[1]) * scale;
  if (!Number.isSafeInteger(n) || n < range[0] || n > range[1])
    throw new VmcError(
      'VMC_ERR_CLI_USAGE',
      `${name} must be from ${range[0]} to ${range[1]}, or -1 for no limit; got ${v}`,
    );
  return n;
}

/** The update `update` asks for: the file's, then the flags over it. */
export function resourceUpdate(o: UpdateOptions, warn: (msg: string) => void): ResourceUpdate {
  const r = o.resources ? fromFile(o.resources, warn) : {};
  if (o.memory !== undefined)
    r.memory = flag('--memory', o.memory, [MIN_MEMORY_LIMIT, Number.MAX_SAFE_INTEGER], true);
  if (o.cpuQuota !== undefined) r.cpuQuota = flag('--cpu-quota', o.cpuQuota, CPU_QUOTA_RANGE);
  if (o.cpuPeriod !== undefined) {
    const p = flag('--cpu-period', o.cpuPeriod, CPU_PERIOD_RANGE);
    if (p === null)
      throw new VmcError('VMC_ERR_CLI_USAGE', '--cpu-period cannot be -1 (a period is always set)');
    r.cpuPeriod = p;
  }
  if (o.pidsLimit !== undefined) r.pids = flag('--pids-limit', o.pidsLimit, [1, MAX_PIDS_LIMIT]);
  if (Object.keys(r).length === 0)
    throw new VmcError(
      'VMC_ERR_CLI_USAGE',
      'update needs --memory, --cpu-quota, --cpu-period, --pids-limit or -r FILE',
    );
  return r;
}

/**
 * `vmcache update ID [--memory B] [--cpu-quota US] [--cpu-period US] [--pids-limit N] [-r FILE]`: new limits
 * for a running container's guest cgroup; a higher memory limit is hot-plugged into its VM first. A pod
 * member's VM is its sandbox's, which applies it.
 */
export async function update(ctx: RuntimeContext, id: string, o: UpdateOptions): Promise<number> {
  const r = resourceUpdate(o, (msg) => ctx.logger.warn({ id }, msg));
  const state = requireStatus(ctx, id, 'update', ['running', 'paused']);
  const c = await connectShim(ctx, state.sandboxId ?? id);
  try {
    await c.request({ t: 'update', name: id, resources: r });
  } finally {
    c.close();
  }
  return 0;
}
