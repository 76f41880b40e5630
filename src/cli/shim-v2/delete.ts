import { readFileSync, rmSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { isVmcError, messageOf } from '../../errors.js';
import { socketAnswers } from '../../platform/unix-socket.js';
import { DeleteResponse } from '../../protocol/shim/generated/containerd/runtime/task/v2/shim.js';
import { StateStore } from '../../sandbox/state-store.js';
import { unmountRootfs } from '../../shim/rootfs.js';
import { timestampOf } from '../../shim/timestamps.js';
import { makeContext } from '../context.js';
import { cleanupLeftovers } from '../runtime/delete.js';
import { shimStateRoot } from './daemon.js';
import type { ShimFlags } from './flags.js';
import { socketPathOf } from './socket-address.js';

/** What containerd is told a task that outlived its daemon exited with: 128 + SIGKILL, as Kata answers. */
export const DEAD_SHIM_EXIT = 128 + 9;

/**
 * `delete`: containerd runs it when a task's daemon is gone (killed, crashed). It cleans up what the daemon
 * left: the task's VM (a sandbox's; a member's is its sandbox's), the control socket, the record, the rootfs
 * mount in the bundle, and the shim socket when nobody answers on it; then prints a binary DeleteResponse.
 * Each step is tried on its own (a failure is logged to stderr), so the answer always comes.
 */
export async function deleteShim(f: ShimFlags): Promise<number> {
  const bundle = f.bundle || process.cwd();
  const ctx = makeContext(f.config ? { config: f.config } : {}, { stderr: true });
  const store = new StateStore(shimStateRoot(ctx.paths.runDir, f.namespace), ctx.clock);
  const step = async (what: string, fn: () => unknown) => {
    try {
      await fn();
    } catch (err) {
      if (!isVmcError(err, 'VMC_ERR_CONTAINER_NOT_FOUND'))
        ctx.logger.warn({ id: f.id, err: messageOf(err) }, `delete: ${what}`);
    }
  };
  await step('VM and control socket', () => cleanupLeftovers({ ...ctx, store }, store.read(f.id)));
  await step('record', () => store.remove(f.id));
  await step('rootfs', () => unmountRootfs(join(bundle, 'rootfs'), ctx));
  await step('shim socket', async () => {
    const path = socketPathOf(readFileSync(join(bundle, 'address'), 'utf8').trim());
    if (!(await socketAnswers(path))) rmSync(path, { force: true });
  });
  const res = DeleteResponse.encode({
    pid: 0,
    exitStatus: DEAD_SHIM_EXIT,
    exitedAt: timestampOf(ctx.clock.now()),
  }).finish();
  writeSync(1, res);
  return 0;
}
