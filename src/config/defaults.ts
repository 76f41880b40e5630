import { join } from 'node:path';
import { IMAGE_FILES } from '../guest/image/manifest.js';
import type { Accel, VmSpec } from '../hypervisor/types.js';

/** The size and shape a VM gets when nothing else is asked for. */
export const DEFAULT_SHAPE = {
  cpus: 1,
  /** Hot-plug headroom: vCPUs can be added up to this many. */
  maxCpus: 4,
  /** Node in the guest needs ~150 MiB; 512 MiB leaves room for workloads and matches Kata's default (2 GiB) scaled to TCG. */
  memoryMiB: 512,
  memorySlots: 8,
  maxMemoryMiB: 8192,
} as const;

/** A VM spec from the built-in defaults and the guest image in `imageDir`. */
export function defaultVmSpec(imageDir: string, accel: Accel, qemuPath = 'qemu-system-x86_64'): VmSpec {
  return {
    qemuPath,
    machine: 'q35',
    accel,
    cpuModel: accel === 'kvm' ? 'host' : 'max',
    ...DEFAULT_SHAPE,
    kernel: join(imageDir, IMAGE_FILES.kernel),
    initrd: join(imageDir, IMAGE_FILES.initrd),
    rootDisk: join(imageDir, IMAGE_FILES.rootfs),
    kernelParams: [],
    tcgTbSizeMiB: 32,
  };
}
