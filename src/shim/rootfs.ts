import { mkdirSync } from 'node:fs';
import { messageOf, VmcError } from '../errors.js';
import type { CommandRunner } from '../platform/command.js';
import type { Logger } from '../platform/logger.js';
import { mountsUnder } from '../platform/mounts.js';

/** One of the mounts containerd hands a shim in CreateTaskRequest.rootfs (containerd.types.Mount). */
export interface RootfsMount {
  type: string;
  source: string;
  options: string[];
}

/** What mounting and unmounting needs: a command runner (`mount`, `umount`) and a logger. */
export interface RootfsDeps {
  run: CommandRunner;
  logger: Logger;
}

/** Mount types the shim accepts from containerd: its snapshotters' (overlay, native's bind). */
const TYPES = new Set(['overlay', 'bind', 'rbind', 'ext4', 'xfs', 'tmpfs']);

/**
 * Mounts containerd's `rootfs[]` (for the overlay snapshotter one `overlay` mount whose options name the
 * lower, upper and work directories) on `target`, the bundle's `rootfs`, in order, as runc's shim does. The
 * sandbox layer then binds `target` into the VM's share as it does for any bundle. A failure unmounts what was
 * mounted and throws VMC_ERR_SHIM_ROOTFS with mount's message.
 */
export async function mountRootfs(mounts: RootfsMount[], target: string, deps: RootfsDeps): Promise<void> {
  mkdirSync(target, { recursive: true });
  let done = 0;
  try {
    for (const m of mounts) {
      if (!TYPES.has(m.type))
        throw new VmcError('VMC_ERR_SHIM_UNSUPPORTED', `rootfs mount type ${JSON.stringify(m.type)}`);
      const bind = m.type === 'bind' || m.type === 'rbind';
      const opts = bind ? [...m.options.filter((o) => o !== 'bind' && o !== 'rbind'), m.type] : m.options;
      const args = bind ? [] : ['-t', m.type];
      if (opts.length) args.push('-o', opts.join(','));
      await deps.run('mount', [...args, m.source, target]);
      done++;
    }
  } catch (err) {
    for (let i = 0; i < done; i++) await deps.run('umount', ['-l', target]).catch(() => undefined);
    if (err instanceof VmcError && err.code === 'VMC_ERR_SHIM_UNSUPPORTED') throw err;
    throw new VmcError('VMC_ERR_SHIM_ROOTFS', `mounting the rootfs on ${target}: ${messageOf(err)}`, {
      cause: err,
    });
  }
}

/**
 * Unmounts whatever is mounted at `target` (every layer, topmost first). The VM's bind of it goes with the VM;
 * a lazy unmount is the fallback, so that a busy mount never keeps a Delete from answering. Logged, not thrown:
 * the task is gone either way, and containerd removes the snapshot next.
 */
export async function unmountRootfs(target: string, deps: RootfsDeps): Promise<void> {
  for (let i = 0; i < 8 && mountsUnder(target).includes(target); i++) {
    await deps
      .run('umount', [target])
      .catch(() => deps.run('umount', ['-l', target]))
      .catch((e: unknown) => deps.logger.warn({ target, err: messageOf(e) }, 'rootfs unmount'));
  }
}
