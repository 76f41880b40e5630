import type { QmpClient } from '../../protocol/qmp/client.js';
import { hotplugIds, rootPortId, spareNicIds } from './cmdline.js';

/**
 * The QMP commands vmcache sends, each a typed function, so that command names, argument shapes and device ids
 * are written once. Migration (save and load of a template) is in migration.ts.
 */

/** What the commands need of a QMP connection (a QmpClient; a fake in unit tests). */
export type Qmp = Pick<QmpClient, 'execute'>;

/** Pauses the vCPUs. */
export async function stop(qmp: Qmp): Promise<void> {
  await qmp.execute('stop');
}

/** Resumes the vCPUs. */
export async function cont(qmp: Qmp): Promise<void> {
  await qmp.execute('cont');
}

/** QEMU's run state (`running`, `paused`, ...). */
export async function queryStatus(qmp: Qmp, timeoutMs?: number): Promise<string> {
  const s = await qmp.execute<{ status: string }>('query-status', undefined, timeoutMs);
  return s.status;
}

/** Asks QEMU to exit at once. */
export async function quit(qmp: Qmp, timeoutMs?: number): Promise<void> {
  await qmp.execute('quit', undefined, timeoutMs);
}

/** A vCPU slot as `query-hotpluggable-cpus` lists it; `qom-path` is set once a CPU occupies it. */
export interface HotpluggableCpu {
  type: string;
  'vcpus-count': number;
  props: Record<string, number>;
  'qom-path'?: string;
}

/** The vCPU slots of the machine, occupied or free (QEMU lists the highest ids first). */
export function queryHotpluggableCpus(qmp: Qmp): Promise<HotpluggableCpu[]> {
  return qmp.execute<HotpluggableCpu[]>('query-hotpluggable-cpus');
}

/** Plugs a vCPU into the free `slot`, as the VM's `n`-th CPU (0-based). */
export async function addCpu(qmp: Qmp, slot: HotpluggableCpu, n: number): Promise<void> {
  await qmp.execute('device_add', { driver: slot.type, id: hotplugIds.cpu(n), ...slot.props });
}

/** Plugs a RAM-backed DIMM of `bytes`; `mibBefore` (the MiB hot-plugged so far) names it. */
export async function addDimm(qmp: Qmp, mibBefore: number, bytes: number): Promise<void> {
  const memdev = hotplugIds.memoryBackend(mibBefore);
  await qmp.execute('object-add', { 'qom-type': 'memory-backend-ram', id: memdev, size: bytes });
  await qmp.execute('device_add', { driver: 'pc-dimm', id: hotplugIds.dimm(mibBefore), memdev });
}

/**
 * Plugs pod interface `i` in: QEMU opens the host tap `tap` by name (Node cannot pass file descriptors over
 * QMP), and a virtio-net NIC with `mac` on that tap goes onto spare root port `i`. `lap`, when given, is called
 * after each command with its name (a phase breakdown's laps).
 */
export async function addNic(
  qmp: Qmp,
  i: number,
  nic: { tap: string; mac: string },
  lap: (step: string) => void = () => {},
): Promise<void> {
  const netdev = hotplugIds.netdev(i);
  await qmp.execute('netdev_add', {
    type: 'tap',
    id: netdev,
    ifname: nic.tap,
    script: 'no',
    downscript: 'no',
  });
  lap('QMP netdev_add (QEMU opens the tap)');
  await qmp.execute('device_add', {
    driver: 'virtio-net-pci',
    id: hotplugIds.nic(i),
    netdev,
    mac: nic.mac,
    bus: rootPortId(i),
  });
  lap('QMP device_add (virtio-net-pci on a root port)');
}

/**
 * Deletes the spare NIC's tap backend: QEMU closes the tap (which then goes away) and the NIC's link stays
 * down for good, so a VM that gets no pod network keeps no usable NIC.
 */
export async function releaseSpareNic(qmp: Qmp): Promise<void> {
  await qmp.execute('netdev_del', { id: spareNicIds.netdev });
}

/**
 * Runs a human-monitor (HMP) command and returns its text. Only for what QMP lacks (QEMU 7.2): `info jit`
 * (hypervisor/qemu/translations.ts).
 */
export function humanMonitor(qmp: Qmp, commandLine: string, timeoutMs?: number): Promise<string> {
  return qmp.execute<string>('human-monitor-command', { 'command-line': commandLine }, timeoutMs);
}
