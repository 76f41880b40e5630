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

/**
 * TCG translation cache per VM, MiB. 64 rather than 32: with 32, the code translated while a pooled VM was
 * warmed does not survive until its hand-off (QEMU flushes the whole buffer when it fills), and the first
 * requests after resume translate it again. Scratch A/B on 2026-12-02 (2-core host, load 0.8–3.2, one VM at a
 * time, interleaved 32/64/32/64, n=3 getVM and 2 `vmcache run` per arm and round): getVM p50 150–189 → 47–81 ms,
 * first container exec 413–507 → 110–114 ms, `vmcache run` /bin/true 789–1009 → 585–603 ms (phases total), cold
 * boot + warm + park not slower; PSS of a parked VM +25–37 MiB (only the part of the buffer that is written).
 */
export const DEFAULT_TCG_TB_SIZE_MIB = 64;

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
    tcgTbSizeMiB: DEFAULT_TCG_TB_SIZE_MIB,
  };
}
