import { SHARED_TAG } from '../../protocol/shared-tag.js';
import { SPARE_NIC_MAC } from '../../protocol/spare-nic.js';
import type { VmFiles, VmSpec } from '../types.js';
import { spareTapName } from './tap-names.js';

/** Name of the virtio-serial port the agent listens on (also its /dev/virtio-ports link in the guest). */
export const AGENT_PORT_NAME = 'vmcache.agent';
/** QMP id of that port (VSERPORT_CHANGE events carry it). */
export const AGENT_PORT_ID = 'agentport';
/** Number of spare PCIe root ports for hot-plug (NICs, disks). */
export const HOTPLUG_ROOT_PORTS = 4;

/** QMP id (the bus to hot-plug onto) of spare PCIe root port `i`, 0-based: `rp1` … `rp4`. */
export function rootPortId(i: number): string {
  return `rp${i + 1}`;
}

/**
 * QMP ids of what is hot-plugged later, named here with the ports so that all device names live in one place.
 * vCPU `n` is the VM's `n`-th (0-based) CPU; memory is numbered by the MiB hot-plugged before it, unique per VM.
 */
export const hotplugIds = {
  cpu: (n: number) => `vcpu-hp${n}`,
  memoryBackend: (mibBefore: number) => `hpmem${mibBefore}`,
  dimm: (mibBefore: number) => `hpdimm${mibBefore}`,
  /** The netdev (host tap) of pod interface `i`. */
  netdev: (i: number) => `podnet${i}`,
  /** The virtio-net NIC of pod interface `i`. */
  nic: (i: number) => `podnic${i}`,
};

/** QMP ids of the spare NIC (protocol/spare-nic.ts) and of its tap backend. */
export const spareNicIds = { netdev: 'sparenet', nic: 'sparenic' };

/** Kernel parameters vmcache always passes. */
export function baseKernelParams(): string[] {
  return [
    'console=ttyS0',
    'quiet',
    'panic=-1', // reboot at once on panic; with -no-reboot QEMU then exits and the VM is seen dead
    'reboot=t',
    'rdinit=/init',
    // Hot-added memory comes online by itself, and movable (so it can be unplugged again), research §6.
    'memhp_default_state=online_movable',
    'cryptomgr.notests',
    'i8042.noaux',
    'i8042.nomux',
    'i8042.nopnp',
    'i8042.dumbkbd', // no PS/2 probing: saves ~0.2 s under TCG
    // No swiotlb bounce buffer. The kernel reserves (and zeroes) 64 MiB for it once the hot-plug range
    // reaches past 4 GiB, and nothing here would bounce: virtio devices without VIRTIO_F_ACCESS_PLATFORM use
    // guest-physical addresses as they are. Measured 2026-12-02 (TCG, one VM at a time): PSS of a parked VM
    // 332–344 → 272 MiB, the guest's MemTotal 401 → 467 MiB; getVM and boot unchanged within the noise.
    'swiotlb=noforce',
  ];
}

/**
 * Options for VM templating. `memoryFile`: guest RAM in a file (the template maps it shared and fills it; a
 * clone maps the same file private, copy-on-write). `incomingDefer`: start waiting for migration state, which
 * the clone then loads over QMP (x-ignore-shared can only be set over QMP in QEMU 7.2).
 */
export interface QemuExtras {
  memoryFile?: { path: string; share: boolean };
  incomingDefer?: boolean;
}

/** Builds QEMU's argument vector for VM `name` (its id) of `spec` with state in `files`. Pure: no I/O. */
export function buildQemuArgs(spec: VmSpec, files: VmFiles, name: string, extras: QemuExtras = {}): string[] {
  const args: string[] = ['-name', `vmcache-${name}`];
  const machine = extras.memoryFile ? `${spec.machine},memory-backend=vmcache-ram` : spec.machine;
  if (spec.accel === 'kvm') {
    args.push('-machine', `${machine},accel=kvm`);
  } else {
    // tb-size must be given through -accel, which conflicts with accel= in -machine. One TCG thread for all
    // vCPUs: with a thread per vCPU (QEMU's default here), the translation buffer is cut into regions handed
    // to the vCPU threads as they fill them, and a vCPU hot-plugged once every region is taken aborts QEMU
    // (7.2: "tcg_region_initial_alloc__locked: assertion failed"; seen 2026-12-03 growing a pooled VM whose
    // warm-up had filled its buffer). A single thread has a single region, flushed when full.
    args.push('-machine', machine, '-accel', `tcg,thread=single,tb-size=${spec.tcgTbSizeMiB}`);
  }
  if (extras.memoryFile) {
    const { path, share } = extras.memoryFile;
    args.push(
      '-object',
      `memory-backend-file,id=vmcache-ram,size=${spec.memoryMiB}M,mem-path=${path},share=${share ? 'on' : 'off'}`,
    );
  }
  if (extras.incomingDefer) args.push('-incoming', 'defer');
  args.push(
    '-cpu',
    spec.cpuModel,
    '-smp',
    `${spec.cpus},maxcpus=${spec.maxCpus}`,
    '-m',
    `${spec.memoryMiB}M,slots=${spec.memorySlots},maxmem=${spec.maxMemoryMiB}M`,
    '-nodefaults',
    '-no-user-config',
    '-display',
    'none',
    '-no-reboot',
    '-rtc',
    'base=utc',
    '-serial',
    `file:${files.consoleLog}`,
    '-kernel',
    spec.kernel,
    '-initrd',
    spec.initrd,
    '-append',
    [...baseKernelParams(), ...spec.kernelParams].join(' '),
    '-drive',
    `file=${spec.rootDisk},format=raw,if=none,id=rootdisk,readonly=on`,
    '-device',
    'virtio-blk-pci,drive=rootdisk,id=rootblk',
    '-fsdev',
    `local,id=sharedfs,path=${files.sharedDir},security_model=none,multidevs=remap`,
    '-device',
    `virtio-9p-pci,fsdev=sharedfs,mount_tag=${SHARED_TAG},id=sharedfsdev`,
    '-device',
    'virtio-serial-pci,id=vser0',
    '-chardev',
    `socket,id=agentchr,path=${files.agentSocket},server=on,wait=off`,
    '-device',
    `virtserialport,bus=vser0.0,chardev=agentchr,name=${AGENT_PORT_NAME},id=${AGENT_PORT_ID}`,
    '-device',
    'vmgenid,guid=auto,id=vmgenid0',
    '-qmp',
    `unix:${files.qmpSocket},server=on,wait=off`,
    '-pidfile',
    files.pidfile,
  );
  // The spare NIC, on the root bus (it is never unplugged). QEMU makes the tap itself (not persistent): it
  // goes away with QEMU, wherever it has been moved to.
  args.push(
    '-netdev',
    `tap,id=${spareNicIds.netdev},ifname=${spareTapName(name)},script=no,downscript=no`,
    '-device',
    `virtio-net-pci,netdev=${spareNicIds.netdev},id=${spareNicIds.nic},mac=${SPARE_NIC_MAC},bus=pcie.0`,
  );
  for (let i = 0; i < HOTPLUG_ROOT_PORTS; i++) {
    args.push('-device', `pcie-root-port,id=${rootPortId(i)},bus=pcie.0,chassis=${i + 1},slot=${i + 1}`);
  }
  return args;
}
