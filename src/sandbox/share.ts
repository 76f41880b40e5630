import { existsSync, rmSync } from 'node:fs';
import type { CommandRunner } from '../platform/command.js';
import type { Logger } from '../platform/logger.js';
import { bindBeneath, unmountAllUnder } from '../platform/mounts.js';

/**
 * Bind-mounts host `source` (file or directory) at `<sharedDir>/<rel>`, creating the mount point, and never
 * through a symlink: the guest can write the share (see bindBeneath).
 */
export async function shareInto(
  sharedDir: string,
  source: string,
  rel: string,
  deps: { run: CommandRunner },
): Promise<void> {
  await bindBeneath(deps.run, source, sharedDir, rel);
}

/** Unmounts and removes a container's directory in a VM's share (never deleting through a mount). */
export async function unshare(dir: string, deps: { run: CommandRunner; logger: Logger }): Promise<void> {
  if (!existsSync(dir)) return;
  const left = await unmountAllUnder(deps.run, dir);
  if (left.length === 0) rmSync(dir, { recursive: true, force: true });
  else deps.logger.error({ dir, mounts: left }, 'member share still has mounts; left in place');
}
