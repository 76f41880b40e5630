import { existsSync, rmSync, statfsSync } from 'node:fs';
import { isVmcError, messageOf, VmcError } from '../../errors.js';
import { readBundle } from '../../oci/bundle.js';
import { vmDir } from '../../platform/paths.js';
import { exitsWithin, signalIfAlive } from '../../platform/process.js';
import { controlSocketPath } from '../../protocol/control/socket-path.js';
import { hookState, runHooksWarning } from '../../sandbox/hooks.js';
import type { SandboxDeps } from '../../sandbox/shim-interface.js';
import { type ContainerState, effectiveStatus } from '../../sandbox/state-store.js';
import { readRecord } from '../../vm/record.js';
import { destroyRecord } from '../../vm/vm.js';
import { connectShim, type RuntimeContext } from './common.js';

/** How long a killed container's host-side process gets to destroy its VM and exit. */
const SHIM_EXIT_MS = 10_000;

/**
 * `vmcache delete [--force] ID`: removes a stopped (or created) container; `--force` also kills a running one.
 * Whatever a crashed host-side process left (its VM, the share's mounts, the control socket) is cleaned up.
 * With `--force`, an id that does not exist is not an error (containerd deletes once more after the end).
 */
export async function del(ctx: RuntimeContext, id: string, opts: { force?: boolean }): Promise<number> {
  let s: ContainerState;
  try {
    s = ctx.store.read(id);
  } catch (err) {
    if (opts.force && isVmcError(err, 'VMC_ERR_CONTAINER_NOT_FOUND')) return 0;
    throw err;
  }
  const status = effectiveStatus(s);
  if ((status === 'running' || status === 'paused' || status === 'creating') && !opts.force)
    throw new VmcError(
      'VMC_ERR_INVALID_STATE',
      `container ${id} is ${status}; stop it first (vmcache kill ${id}) or delete it with --force`,
    );
  if (status !== 'stopped' && s.shim) {
    // Created, running or paused: the host-side process stops the process and destroys the VM, then exits.
    try {
      const c = await connectShim(ctx, id);
      await c.request({ t: 'kill', signal: 'SIGKILL' }).finally(() => c.close());
    } catch {
      signalIfAlive(s.shim, 'SIGKILL'); // unresponsive: its VM is cleaned up below
    }
    if (!(await exitsWithin(s.shim, SHIM_EXIT_MS, ctx.clock))) signalIfAlive(s.shim, 'SIGKILL');
  }
  await cleanupLeftovers(ctx, ctx.store.read(id));
  await poststop(ctx, s);
  ctx.store.remove(id);
  return 0;
}

/**
 * The bundle's poststop hooks, on the host, once the container is gone (before its record is removed). A
 * failure, or a bundle that can no longer be read, is a warning: the deletion goes on, as the spec asks.
 */
export async function poststop(ctx: RuntimeContext, s: ContainerState): Promise<void> {
  let cfg: ReturnType<typeof readBundle>;
  try {
    cfg = readBundle(s.bundle, (p) => statfsSync(p));
  } catch (err) {
    ctx.logger.warn({ id: s.id, err: messageOf(err) }, 'poststop hooks not run: the bundle cannot be read');
    return;
  }
  await runHooksWarning('poststop', cfg, hookState(s.id, cfg, 'stopped', 0), ctx);
}

/** Destroys the VM of a container whose host-side process died without doing so, and its control socket (also the shim v2 `delete`). */
export async function cleanupLeftovers(ctx: SandboxDeps, s: ContainerState): Promise<void> {
  // A pod member has no VM of its own; its binds in the sandbox VM's share go with that VM (see MemberShim's
  // stop), since another container of the pod may see the same directories through them.
  if (s.vmId && !s.sandboxId) {
    const dir = vmDir(ctx.paths, s.vmId);
    if (existsSync(dir)) {
      try {
        await destroyRecord(readRecord(dir), ctx, 0);
      } catch (err) {
        ctx.logger.warn({ id: s.id, vmId: s.vmId, err: String(err) }, 'could not clean up the VM');
      }
    }
  }
  rmSync(controlSocketPath(ctx.paths.runDir, ctx.store.root, s.id), { force: true });
}
