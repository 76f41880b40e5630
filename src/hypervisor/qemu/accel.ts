import { accessSync, constants, readFileSync } from 'node:fs';
import type { Accel } from '../types.js';

/** Why an accelerator was chosen, for `doctor` and logs. */
export interface AccelChoice {
  accel: Accel;
  reason: string;
}

/**
 * Chooses KVM only when it can really run a guest: `/dev/kvm` must be openable *and* the CPU must advertise
 * hardware virtualisation (vmx/svm). On hosts that are themselves VMs, `/dev/kvm` can exist without nested
 * virtualisation support; QEMU then starts and the guest hangs (seen on this project's CI machines), so the
 * device alone is not proof.
 */
export function detectAccel(
  readCpuinfo: () => string = () => readFileSync('/proc/cpuinfo', 'utf8'),
  devKvm = '/dev/kvm',
): AccelChoice {
  try {
    accessSync(devKvm, constants.R_OK | constants.W_OK);
  } catch {
    return { accel: 'tcg', reason: `${devKvm} is not available` };
  }
  const flags = /^flags\s*:(.*)$/m.exec(readCpuinfo())?.[1]?.split(/\s+/) ?? [];
  if (!flags.includes('vmx') && !flags.includes('svm')) {
    return {
      accel: 'tcg',
      reason: `${devKvm} exists but the CPU advertises no vmx/svm (nested virtualisation is off)`,
    };
  }
  return { accel: 'kvm', reason: `${devKvm} is usable and the CPU has hardware virtualisation` };
}
