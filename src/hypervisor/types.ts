/** Which accelerator QEMU uses. */
export type Accel = 'kvm' | 'tcg';

/**
 * Everything that determines how a VM is booted. Fields that must be equal for a cached or templated VM to be
 * usable in place of a fresh boot are listed in `BOOT_RELEVANT_FIELDS`.
 */
export interface VmSpec {
  /** QEMU binary. */
  qemuPath: string;
  /** Machine type; q35 (hot-plug, vmgenid and templating work; microvm hangs under TCG, research §1). */
  machine: string;
  accel: Accel;
  /** CPU model. `max` under TCG (gives RDRAND/RDSEED and starts Node ~0.8 s faster than qemu64); `host` under KVM. */
  cpuModel: string;
  cpus: number;
  maxCpus: number;
  memoryMiB: number;
  memorySlots: number;
  maxMemoryMiB: number;
  kernel: string;
  initrd: string;
  rootDisk: string;
  /** Extra kernel parameters appended after vmcache's own. */
  kernelParams: string[];
  /** TCG translation-cache size in MiB (caps ~60 MiB of RSS per VM, research §8). */
  tcgTbSizeMiB: number;
}

/** Spec fields that change the booted machine (compared before reusing a VM built by someone else). */
export const BOOT_RELEVANT_FIELDS = [
  'qemuPath',
  'machine',
  'accel',
  'cpuModel',
  'maxCpus',
  'memorySlots',
  'maxMemoryMiB',
  'kernel',
  'initrd',
  'rootDisk',
  'kernelParams',
  'tcgTbSizeMiB',
] as const satisfies ReadonlyArray<keyof VmSpec>;

/** Files of one VM's state directory. */
export interface VmFiles {
  dir: string;
  pidfile: string;
  qmpSocket: string;
  agentSocket: string;
  consoleLog: string;
  qemuLog: string;
  /** The 9p-exported directory (container roots are bind-mounted into subdirectories of it). */
  sharedDir: string;
  record: string;
}

/** File layout of a VM state directory (kept short: Unix socket paths are limited to 107 bytes). */
export function vmFiles(dir: string): VmFiles {
  return {
    dir,
    pidfile: `${dir}/pid`,
    qmpSocket: `${dir}/qmp.sock`,
    agentSocket: `${dir}/agent.sock`,
    consoleLog: `${dir}/console.log`,
    qemuLog: `${dir}/qemu.log`,
    sharedDir: `${dir}/shared`,
    record: `${dir}/vm.json`,
  };
}
