import { VmcError } from '../errors.js';
import { parseRecord, type VmRecord } from './record.js';

/** Version of the JSON carried in `GrpcVM.hypervisor`. A receiver refuses versions it does not know. */
export const HANDOFF_VERSION = 1;

/**
 * Serialises everything a new owner needs to drive a VM: paths (QMP, agent, shared directory, console), the
 * QEMU pid and start time, the boot spec (SMP layout, memory slots) and the hot-plug state. Kata 2.x lost the
 * agent address here and handed out VMs nobody could talk to; this carries the whole record.
 */
export function encodeHandoff(record: VmRecord): Buffer {
  return Buffer.from(JSON.stringify({ version: HANDOFF_VERSION, record }));
}

/** Parses and validates a hand-off blob; errors name what is wrong. */
export function decodeHandoff(bytes: Uint8Array): VmRecord {
  let v: { version?: unknown; record?: unknown };
  try {
    v = JSON.parse(Buffer.from(bytes).toString('utf8'));
  } catch (cause) {
    throw new VmcError('VMC_ERR_CACHE_PROTOCOL', 'GrpcVM.hypervisor is not JSON', { cause });
  }
  if (v?.version !== HANDOFF_VERSION) {
    throw new VmcError(
      'VMC_ERR_CACHE_PROTOCOL',
      `GrpcVM.hypervisor version ${String(v?.version)} is not supported (expected ${HANDOFF_VERSION})`,
    );
  }
  try {
    return parseRecord(v.record, 'GrpcVM.hypervisor');
  } catch (cause) {
    throw new VmcError('VMC_ERR_CACHE_PROTOCOL', (cause as Error).message, { cause });
  }
}
