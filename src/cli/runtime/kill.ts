import { isVmcError, VmcError } from '../../errors.js';
import { effectiveStatus } from '../../sandbox/state-store.js';
import { connectShim, type RuntimeContext, requireStatus, signalName } from './common.js';

/**
 * `vmcache kill [--all] ID [SIGNAL]` (default SIGTERM; names or numbers). With `--all`, as runc's: every process
 * of the container, including what its main process left behind (containerd asks for that when the main
 * process of a container that shares its pod's PID namespace exits). Those live in the container's guest
 * cgroup, which only the VM's owner (the container itself, or its sandbox for a pod member) can reach.
 */
export async function kill(
  ctx: RuntimeContext,
  id: string,
  signal: string | undefined,
  opts: { all?: boolean } = {},
): Promise<number> {
  const sig = signalName(signal ?? 'SIGTERM');
  const state = ctx.store.read(id);
  const status = effectiveStatus(state);
  if (opts.all && status !== 'created') {
    const owner = state.sandboxId ?? id;
    // A VM owner that is stopped (or deleted) means the VM is gone, and every process of the container with it.
    if (ownerStatus(ctx, owner, owner === id ? status : undefined) === 'stopped') return 0;
    await request(ctx, owner, { t: 'signal-all', name: id, signal: sig });
    return 0;
  }
  // runc's words for a container that has exited: containerd's shim reads "container not running" as "the
  // process is already gone" (it kills before it deletes).
  const notRunning = () =>
    new VmcError('VMC_ERR_INVALID_STATE', `container ${id} is stopped: container not running`);
  if (status === 'stopped') throw notRunning();
  requireStatus(ctx, id, 'kill', ['created', 'running', 'paused']);
  try {
    await request(ctx, id, { t: 'kill', signal: sig });
  } catch (e) {
    // The container may exit between the state check and the request.
    if (effectiveStatus(ctx.store.read(id)) === 'stopped') throw notRunning();
    throw e;
  }
  return 0;
}

/** The status of the container that holds a VM (`known` if already read); a deleted one reads as stopped. */
function ownerStatus(ctx: RuntimeContext, owner: string, known: string | undefined): string {
  if (known) return known;
  try {
    return effectiveStatus(ctx.store.read(owner));
  } catch (err) {
    if (isVmcError(err, 'VMC_ERR_CONTAINER_NOT_FOUND')) return 'stopped';
    throw err;
  }
}

/** `vmcache pause ID`: freezes the container's VM. */
export async function pause(ctx: RuntimeContext, id: string): Promise<number> {
  requireStatus(ctx, id, 'pause', ['running']);
  await request(ctx, id, { t: 'pause' });
  return 0;
}

/** `vmcache resume ID`. */
export async function resume(ctx: RuntimeContext, id: string): Promise<number> {
  requireStatus(ctx, id, 'resume', ['paused']);
  await request(ctx, id, { t: 'resume' });
  return 0;
}

async function request(
  ctx: RuntimeContext,
  id: string,
  req:
    | { t: 'kill'; signal: string }
    | { t: 'signal-all'; name: string; signal: string }
    | { t: 'pause' }
    | { t: 'resume' },
): Promise<void> {
  const c = await connectShim(ctx, id);
  try {
    await c.request(req);
  } finally {
    c.close();
  }
}
