import { isVmcError, messageOf, VmcError } from '../errors.js';
import { queryStatus } from '../hypervisor/qemu/qmp-commands.js';
import type { Vm } from '../vm/vm.js';

// The checks a pool makes of its VMs: the readiness gate before one enters the pool, and the cheap liveness
// check of an idle (paused) one.

/**
 * The readiness gate (see PoolOptions.agentGate in cache.ts): `resume` connects to the agent and waits for its
 * handshake (bounded by the VM's own handshake timeout), `park` pauses it again with the agent waiting for
 * its next owner. A VM that fails it is stopped; the error says which gate it failed.
 */
export async function agentGate(vm: Vm): Promise<Vm> {
  try {
    await vm.resume();
    await vm.park();
    return vm;
  } catch (err) {
    await vm.destroy().catch(() => undefined);
    throw new VmcError(
      isVmcError(err) ? err.code : 'VMC_ERR_AGENT_TIMEOUT',
      `VM ${vm.id} failed the readiness gate (its agent must answer before it enters the pool): ${messageOf(err).split('\n')[0]}`,
      { cause: err },
    );
  }
}

/** QEMU's run state of `vm` (`paused`, `running`, ...), `dead` when its process is gone, `unknown` when QMP fails. */
export async function runState(vm: Vm, timeoutMs: number): Promise<string> {
  if (!vm.alive()) return 'dead';
  try {
    return await queryStatus(vm.qmp, timeoutMs);
  } catch {
    return 'unknown';
  }
}
