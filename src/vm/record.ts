import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { VmcError } from '../errors.js';
import type { VmFiles, VmSpec } from '../hypervisor/types.js';
import { writeFileAtomic } from '../platform/atomic-write.js';
import type { ProcessIdentity } from '../platform/process.js';

/** Version of the on-disk record (and of the hand-off JSON that embeds it). */
export const VM_RECORD_VERSION = 1;

/**
 * What vmcache knows about a VM, on disk in `<runDir>/vm/<id>/vm.json`. It is the single source for tracking
 * (nothing is orphaned: a sweep finds every record) and for hand-off (a new owner needs nothing else).
 */
export interface VmRecord {
  version: typeof VM_RECORD_VERSION;
  id: string;
  createdAt: number;
  spec: VmSpec;
  files: VmFiles;
  /** The QEMU process (pid + start time: pid reuse is real). */
  qemu: ProcessIdentity;
  /** The process responsible for the VM; when it is gone and nobody adopted the VM, the VM is an orphan. */
  owner: ProcessIdentity | null;
  /** Hot-plugged resources beyond the boot shape. */
  hotplug: { cpus: number; memoryMiB: number };
  /**
   * The process that put the VM, paused and parked, into its pool of idle VMs (see `markPooled`). While it is
   * still the owner, the VM is idle in that pool; once anyone else took it, `owner` differs. Absent in records
   * written before re-adoption existed: such VMs are never adopted.
   */
  pooledBy?: ProcessIdentity | null;
}

/** True when `a` and `b` name the same process (pid and start time). */
export function sameProcess(
  a: ProcessIdentity | null | undefined,
  b: ProcessIdentity | null | undefined,
): boolean {
  return !!a && !!b && a.pid === b.pid && a.startTime === b.startTime;
}

/**
 * Records that the VM now waits idle in its owner's pool. If the owner dies, a successor may adopt the VM
 * (vm/adopt.ts): the mark, with the owner unchanged since, is what tells an idle VM from one a client took.
 */
export function markPooled(r: VmRecord): void {
  r.pooledBy = r.owner;
  writeRecord(r);
}

/** True when the VM was idle in its owner's pool (`markPooled`) and nobody has taken it since. */
export function isIdleInPool(r: VmRecord): boolean {
  return r.owner !== null && sameProcess(r.pooledBy, r.owner);
}

/** Writes a record atomically (tmp + rename), so a crash never leaves a half-written file. */
export function writeRecord(r: VmRecord): void {
  writeFileAtomic(r.files.record, `${JSON.stringify(r, null, 2)}\n`, { mode: 0o600 });
}

/** Validates a parsed record from `source` (a file, or the hand-off); VMC_ERR_VM_RECORD_INVALID names the field. */
export function parseRecord(v: unknown, source: string): VmRecord {
  const r = v as Partial<VmRecord> | null;
  const bad = (field: string) =>
    new VmcError('VMC_ERR_VM_RECORD_INVALID', `${source}: invalid VM record (${field})`, {
      details: { source, field },
    });
  if (!r || typeof r !== 'object') throw bad('not an object');
  if (r.version !== VM_RECORD_VERSION)
    throw bad(`version ${String(r.version)}, expected ${VM_RECORD_VERSION}`);
  if (typeof r.id !== 'string' || !/^[a-z0-9-]{1,64}$/.test(r.id)) throw bad('id');
  if (!r.qemu || !Number.isInteger(r.qemu.pid) || !Number.isInteger(r.qemu.startTime)) throw bad('qemu');
  if (!r.files || typeof r.files.qmpSocket !== 'string' || typeof r.files.agentSocket !== 'string')
    throw bad('files');
  if (!r.spec || typeof r.spec !== 'object') throw bad('spec');
  return { hotplug: { cpus: 0, memoryMiB: 0 }, owner: null, ...r } as VmRecord;
}

/** Reads the record in a VM directory. */
export function readRecord(dir: string): VmRecord {
  const path = join(dir, 'vm.json');
  if (!existsSync(path)) throw new VmcError('VMC_ERR_VM_NOT_FOUND', `no VM record at ${path}`);
  let parsed: unknown;
  try {
    parsed = JSON.parse(readFileSync(path, 'utf8'));
  } catch (cause) {
    throw new VmcError('VMC_ERR_VM_RECORD_INVALID', `${path}: VM record is not JSON`, {
      cause,
      details: { source: path, field: '(the whole file)' },
    });
  }
  return parseRecord(parsed, path);
}

/** Every VM directory under `<runDir>/vm`, with its record or the error reading it. */
export function listVmDirs(
  runDir: string,
): Array<{ id: string; dir: string; record: VmRecord | null; error?: Error }> {
  const root = join(runDir, 'vm');
  if (!existsSync(root)) return [];
  return readdirSync(root).map((id) => {
    const dir = join(root, id);
    try {
      return { id, dir, record: readRecord(dir) };
    } catch (error) {
      return { id, dir, record: null, error: error as Error };
    }
  });
}
