import { rmSync, statSync } from 'node:fs';
import { isAlive } from '../platform/process.js';
import { isIdleInPool, listVmDirs } from './record.js';
import { destroyRecord, type VmDeps } from './vm.js';

/** What a sweep did. */
interface SweepResult {
  /** VMs whose QEMU was still running but whose owner had died: stopped. */
  reaped: string[];
  /** Records of QEMUs that had already exited: removed. */
  removed: string[];
}

/** A directory without a readable record younger than this may be a boot in progress in another process. */
const UNRECORDED_GRACE_MS = 60_000;

/**
 * Finds VMs nobody owns any more and ends them: the "nothing is orphaned" promise. A VM is an orphan when
 * the process recorded as its owner is gone (pid + start time). VMs whose owner is alive (including other
 * vmcache processes) are left alone.
 */
export async function sweepOrphans(
  deps: VmDeps,
  opts: {
    includeUnowned?: boolean;
    /**
     * Leaves orphans that were idle in their dead owner's pool (`isIdleInPool`) to a cache server about to
     * start, which adopts or reaps each of them (vm/adopt.ts).
     */
    leavePooled?: boolean;
  } = {},
): Promise<SweepResult> {
  const result: SweepResult = { reaped: [], removed: [] };
  for (const { id, dir, record } of listVmDirs(deps.paths.runDir)) {
    if (!record) {
      let age = 0;
      try {
        age = deps.clock.now() - statSync(dir).mtimeMs;
      } catch {
        continue;
      }
      if (age > UNRECORDED_GRACE_MS) {
        rmSync(dir, { recursive: true, force: true });
        result.removed.push(id);
      }
      continue;
    }
    const qemuAlive = isAlive(record.qemu);
    const ownerAlive = record.owner !== null && isAlive(record.owner);
    if (qemuAlive && ownerAlive) continue;
    // Explicitly unowned (released for adoption, or handed to a Kata-style client): kept unless asked.
    if (qemuAlive && record.owner === null && !opts.includeUnowned) continue;
    if (qemuAlive && opts.leavePooled && isIdleInPool(record)) continue;
    deps.logger.warn(
      { vmId: id, qemuPid: record.qemu.pid, qemuAlive, owner: record.owner },
      qemuAlive ? 'reaping orphaned VM' : 'removing record of exited VM',
    );
    await destroyRecord(record, deps, 0);
    (qemuAlive ? result.reaped : result.removed).push(id);
  }
  return result;
}
