import { messageOf } from '../errors.js';
import { identify, isAlive } from '../platform/process.js';
import { isIdleInPool, listVmDirs, readRecord, sameProcess, type VmRecord, writeRecord } from './record.js';
import { destroyRecord, Vm, type VmDeps } from './vm.js';

/** What re-adoption did with the VMs a dead owner had kept idle in its pool. */
export interface AdoptionResult {
  /** Claimed (this process is their owner now), paused, parked, their agent answered: for the caller's pool. */
  adopted: Vm[];
  /** Failed a check, or not wanted (another shape, beyond the pool's size): stopped, as any orphan is. */
  reaped: Array<{ id: string; reason: string }>;
  /** Taken by another process while we looked (its record names a new owner): not touched. */
  left: string[];
}

/** Options of {@link adoptIdleVms}. */
export interface AdoptionOptions {
  /** Whether the caller's pool takes the VM of this record (e.g. its spec is the pool's). */
  accepts: (r: VmRecord) => boolean;
  /** At most this many are adopted (the pool's size): the youngest first, the oldest being nearest its max age. */
  limit: number;
  /** Bound on QMP's greeting and `query-status`: a QEMU that does not answer within it is reaped. */
  qmpTimeoutMs?: number;
  /** Takes QMP of a paused VM (default: `Vm.attachRecord` with `pausedOnly`). A seam for tests. */
  attach?: (r: VmRecord) => Promise<Vm>;
  /** The agent check (default: resume, handshake, park again). A seam for tests. */
  probe?: (vm: Vm) => Promise<void>;
}

/**
 * The agent check of an adopted VM. A paused guest cannot answer, so it is resumed (which connects to its
 * agent and waits for the handshake) and parked again (agent port reopened, vCPUs paused), as it was before
 * its old owner died. About a second under TCG, most of it QEMU's one-event-per-second limit on the port's
 * reopening; paid once per adopted VM at server start, in parallel.
 */
async function resumeAndPark(vm: Vm): Promise<void> {
  await vm.resume();
  await vm.park();
}

/** The records of live VMs that a now dead owner had idle in its pool: the candidates of re-adoption. */
export function findIdleOrphans(runDir: string): VmRecord[] {
  return listVmDirs(runDir).flatMap(({ record: r }) =>
    r && isIdleInPool(r) && !isAlive(r.owner!) && isAlive(r.qemu) ? [r] : [],
  );
}

/**
 * Re-adoption after a crash (`kill -9` of a cache server): takes over the VMs the dead server had idle in its
 * pool instead of stopping them and booting new ones. Same VM ids, same QEMU processes, no reboot.
 *
 * A candidate is a VM whose record says it was idle in its owner's pool (`isIdleInPool`: marked when it
 * entered the pool, owner unchanged since, so no client ever took it), whose owner is dead and whose QEMU is
 * alive. VMs handed out to a client (a new owner, alive or not, or unowned as for a Kata client) are never
 * candidates: a live owner's are left alone, a dead client's are the orphan sweep's. Each candidate is then
 * - reaped when the pool does not want it (`accepts`, hot-plugged resources, beyond `limit`);
 * - attached: QEMU answers QMP within `qmpTimeoutMs` and `query-status` says paused; reaped otherwise;
 * - re-read from disk: when the record names a new owner, someone took the VM meanwhile; it is left alone;
 * - claimed (this process recorded as its owner), then probed (`probe`: the agent answers); reaped if not.
 *
 * QEMU serves one QMP client at a time and a taker records itself as owner only once it holds QMP, so from
 * the attach on nobody else can take the VM, and a taker already holding QMP makes our attach time out.
 */
export async function adoptIdleVms(deps: VmDeps, opts: AdoptionOptions): Promise<AdoptionResult> {
  const log = deps.logger.child({ subsystem: 'vm.adopt' });
  const qmpTimeoutMs = opts.qmpTimeoutMs ?? 3_000;
  const attach =
    opts.attach ?? ((r: VmRecord) => Vm.attachRecord(r, deps, { pausedOnly: true, qmpTimeoutMs }));
  const probe = opts.probe ?? resumeAndPark;
  const self = identify(process.pid)!;
  const result: AdoptionResult = { adopted: [], reaped: [], left: [] };

  const found = findIdleOrphans(deps.paths.runDir);
  const fit = (r: VmRecord) => opts.accepts(r) && r.hotplug.cpus === 0 && r.hotplug.memoryMiB === 0;
  const tried = found
    .filter(fit)
    .sort((a, b) => b.createdAt - a.createdAt)
    .slice(0, Math.max(0, opts.limit));

  /** The record on disk still names the dead owner we saw: nobody took the VM. */
  const unchanged = (r: VmRecord) => {
    try {
      return sameProcess(readRecord(r.files.dir).owner, r.owner);
    } catch {
      return false; // gone or unreadable: not ours to touch
    }
  };
  const reap = async (r: VmRecord, reason: string) => {
    if (!unchanged(r)) {
      result.left.push(r.id);
      return;
    }
    log.warn(
      { vmId: r.id, qemuPid: r.qemu.pid, reason },
      'not adopting the idle VM of a dead owner: stopping it',
    );
    await destroyRecord(r, deps, 0);
    result.reaped.push({ id: r.id, reason });
  };

  const adoptOne = async (r: VmRecord) => {
    const deadOwner = r.owner;
    let vm: Vm;
    try {
      vm = await attach(r);
    } catch (err) {
      return reap(r, messageOf(err).split('\n')[0]!);
    }
    // We hold QMP now: a record still naming the dead owner cannot change under us any more.
    if (!unchanged(r)) {
      vm.detach();
      result.left.push(r.id);
      return;
    }
    vm.record.owner = self;
    writeRecord(vm.record);
    try {
      await probe(vm);
    } catch (err) {
      const reason = `agent check failed: ${messageOf(err).split('\n')[0]!}`;
      log.warn({ vmId: r.id, reason }, 'not adopting the idle VM of a dead owner: stopping it');
      await vm.destroy();
      result.reaped.push({ id: r.id, reason });
      return;
    }
    log.info({ vmId: r.id, qemuPid: r.qemu.pid, previousOwner: deadOwner?.pid }, 'adopted an idle VM');
    result.adopted.push(vm);
  };

  await Promise.all([
    ...tried.map(adoptOne),
    ...found
      .filter((r) => !tried.includes(r))
      .map((r) => reap(r, fit(r) ? 'beyond the pool size' : 'not of the pool shape')),
  ]);
  return result;
}
