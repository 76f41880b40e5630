import { VmcError } from '../../errors.js';
import { effectiveStatus } from '../../sandbox/state-store.js';
import { connectShim, type RuntimeContext, requireStatus, signalName } from './common.js';

/** `vmcache kill ID [SIGNAL]` (default SIGTERM; names or numbers). */
export async function kill(ctx: RuntimeContext, id: string, signal: string | undefined): Promise<number> {
  const sig = signalName(signal ?? 'SIGTERM');
  // runc's words for a container that has exited: containerd's shim reads "container not running" as "the
  // process is already gone" (it kills an exited container's leftovers, and kills before delete).
  const notRunning = () =>
    new VmcError('VMC_ERR_INVALID_STATE', `container ${id} is stopped: container not running`);
  if (effectiveStatus(ctx.store.read(id)) === 'stopped') throw notRunning();
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
  req: { t: 'kill'; signal: string } | { t: 'pause' } | { t: 'resume' },
): Promise<void> {
  const c = await connectShim(ctx, id);
  try {
    await c.request(req);
  } finally {
    c.close();
  }
}
