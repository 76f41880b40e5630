import { VmcError } from '../errors.js';
import { addCpu, addDimm, queryHotpluggableCpus } from '../hypervisor/qemu/qmp-commands.js';
import { writeRecord } from './record.js';
import type { Vm } from './vm.js';

/** Guest memory is hot-plugged in whole 128 MiB blocks (the x86-64 memory block size). */
export const MEMORY_BLOCK_MIB = 128;

/** The current shape of a VM: boot size plus what was hot-plugged. */
export function currentShape(vm: Vm): { cpus: number; memoryMiB: number } {
  const r = vm.record;
  return { cpus: r.spec.cpus + r.hotplug.cpus, memoryMiB: r.spec.memoryMiB + r.hotplug.memoryMiB };
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
    const slots = await queryHotpluggableCpus(vm.qmp);
    const free = slots.filter((s) => !s['qom-path']).reverse(); // QEMU lists the highest ids first
    for (let i = 0; i < want.cpus - now.cpus; i++) {
      const slot = free[i];
      if (!slot) throw new VmcError('VMC_ERR_INVALID_STATE', `VM ${vm.id}: no free vCPU hot-plug slot`);
      await addCpu(vm.qmp, slot, now.cpus + i);
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
    await addDimm(vm.qmp, vm.record.hotplug.memoryMiB, delta * 2 ** 20);
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
