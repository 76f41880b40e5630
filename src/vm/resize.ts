import { VmcError } from '../errors.js';
import { writeRecord } from './record.js';
import type { Vm } from './vm.js';

/** Guest memory is hot-plugged in whole 128 MiB blocks (the x86-64 memory block size). */
export const MEMORY_BLOCK_MIB = 128;

/** The current shape of a VM: boot size plus what was hot-plugged. */
export function currentShape(vm: Vm): { cpus: number; memoryMiB: number } {
  const r = vm.record;
  return { cpus: r.spec.cpus + r.hotplug.cpus, memoryMiB: r.spec.memoryMiB + r.hotplug.memoryMiB };
}

interface HotpluggableCpu {
  type: string;
  'vcpus-count': number;
  props: Record<string, number>;
  'qom-path'?: string;
}

/**
 * Grows a running VM to at least `cpus` vCPUs and `memoryMiB` (never shrinks), Kata-style: QMP `device_add` of
 * CPUs from the free hot-plug slots and of pc-dimm memory, then the agent onlines them. Memory is onlined by
 * the kernel itself (`memhp_default_state=online_movable`); the agent's `online` is the fallback.
 * Under TCG onlining a vCPU takes about 1 s (measured); memory takes milliseconds.
 */
export async function grow(
  vm: Vm,
  want: { cpus: number; memoryMiB: number },
): Promise<{ addedCpus: number; addedMemoryMiB: number }> {
  const now = currentShape(vm);
  const spec = vm.record.spec;
  let addedCpus = 0;
  let addedMemoryMiB = 0;
  if (want.cpus > now.cpus) {
    if (want.cpus > spec.maxCpus) {
      throw new VmcError(
        'VMC_ERR_CONFIG_INVALID',
        `VM ${vm.id}: ${want.cpus} vCPUs requested, the hot-plug limit (default_maxvcpus) is ${spec.maxCpus}`,
      );
    }
    const slots = await vm.qmp.execute<HotpluggableCpu[]>('query-hotpluggable-cpus');
    const free = slots.filter((s) => !s['qom-path']).reverse(); // QEMU lists the highest ids first
    for (let i = 0; i < want.cpus - now.cpus; i++) {
      const slot = free[i];
      if (!slot) throw new VmcError('VMC_ERR_INVALID_STATE', `VM ${vm.id}: no free vCPU hot-plug slot`);
      await vm.qmp.execute('device_add', { driver: slot.type, id: `vcpu-hp${now.cpus + i}`, ...slot.props });
      addedCpus++;
    }
  }
  if (want.memoryMiB > now.memoryMiB) {
    const delta = Math.ceil((want.memoryMiB - now.memoryMiB) / MEMORY_BLOCK_MIB) * MEMORY_BLOCK_MIB;
    if (now.memoryMiB + delta > spec.maxMemoryMiB) {
      throw new VmcError(
        'VMC_ERR_CONFIG_INVALID',
        `VM ${vm.id}: ${want.memoryMiB} MiB requested, the hot-plug limit (default_maxmemory) is ${spec.maxMemoryMiB} MiB`,
      );
    }
    const n = vm.record.hotplug.memoryMiB;
    await vm.qmp.execute('object-add', {
      'qom-type': 'memory-backend-ram',
      id: `hpmem${n}`,
      size: delta * 2 ** 20,
    });
    await vm.qmp.execute('device_add', { driver: 'pc-dimm', id: `hpdimm${n}`, memdev: `hpmem${n}` });
    addedMemoryMiB = delta;
  }
  if (addedCpus || addedMemoryMiB) {
    vm.record.hotplug = {
      cpus: vm.record.hotplug.cpus + addedCpus,
      memoryMiB: vm.record.hotplug.memoryMiB + addedMemoryMiB,
    };
    writeRecord(vm.record);
    // Onlining a vCPU under TCG can take seconds (research §6): allow a generous bound.
    await vm.agent.request(
      { op: 'online', cpus: addedCpus > 0 ? now.cpus + addedCpus : 0, memory: addedMemoryMiB > 0 },
      120_000,
    );
  }
  return { addedCpus, addedMemoryMiB };
}
