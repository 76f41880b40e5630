import { existsSync, statfsSync } from 'node:fs';
import { join } from 'node:path';
import { VmcError } from '../../errors.js';
import { readBundle } from '../../oci/bundle.js';
import { planMounts } from '../../sandbox/mounts.js';
import { namespacesToShare } from '../../sandbox/namespaces.js';
import { checkPodNetns } from '../../sandbox/network.js';
import { checkId, newContainerState } from '../../sandbox/state-store.js';
import { sweepOrphans } from '../../vm/sweep.js';
import { hostVmSpec } from '../common.js';
import { type RuntimeContext, writePidFile } from './common.js';
import { spawnReporting } from './detached.js';

/** Options of `create` (runc's). */
interface CreateOptions {
  bundle?: string;
  pidFile?: string;
  consoleSocket?: string;
}

/**
 * Checks the bundle and the guest image, then records the container as `creating`. Everything that can be
 * rejected up front is, so that bad input leaves nothing behind. `terminal`: whether the container's stdio
 * will be a terminal (a console socket, or the caller's own), which `process.terminal` needs.
 */
export function reserve(ctx: RuntimeContext, id: string, bundleDir: string, terminal: boolean): void {
  checkId(id);
  const cfg = readBundle(bundleDir, (p) => statfsSync(p));
  if (cfg.process.terminal && !terminal)
    throw new VmcError(
      'VMC_ERR_CLI_USAGE',
      `${join(cfg.bundle, 'config.json')}: process.terminal is true: give --console-socket ` +
        '(a detached container has no terminal of its own; runc refuses it the same way)',
    );
  planMounts(cfg.mounts, id, cfg.shmSize, existsSync, join(cfg.bundle, 'config.json'));
  const member = cfg.containerType === 'container' && cfg.sandboxId !== id;
  // Namespace paths are checked before anything is taken (a member's may name only its sandbox's; a member
  // of a sandbox that does not exist is refused by its creation, with that reason).
  const sandbox = member ? sandboxPid(ctx, cfg.sandboxId!) : null;
  if (!member || sandbox !== null) namespacesToShare(cfg, sandbox);
  if (cfg.netns && !member) checkPodNetns(cfg.netns);
  hostVmSpec(ctx);
  ctx.store.reserve(newContainerState(id, cfg, member, ctx.clock));
}

/** Whether the recorded container's bundle asks for a terminal (a console socket is used only then). */
export function terminalWanted(ctx: RuntimeContext, id: string): boolean {
  return bundleWantsTerminal(ctx.store.read(id).bundle);
}

/** Whether the bundle in `dir` asks for a terminal (`process.terminal`); false when it cannot be read. */
export function bundleWantsTerminal(dir: string): boolean {
  try {
    return readBundle(dir, (p) => statfsSync(p)).process.terminal;
  } catch {
    return false; // reserve() reports what is wrong with it
  }
}

/** The host pid of sandbox `sid`'s host-side process (null if it is not recorded: the member's create fails later). */
function sandboxPid(ctx: RuntimeContext, sid: string): number | null {
  try {
    return ctx.store.read(sid).shim?.pid ?? null;
  } catch {
    return null;
  }
}

/**
 * Starts the container's host-side process (`vmcache shim ID`, see shim.ts) and waits until it reports that the
 * container is created; on failure the container's record is removed. Returns its pid.
 */
export async function spawnShim(ctx: RuntimeContext, id: string, consoleSocket?: string): Promise<number> {
  try {
    return await spawnReporting(
      ctx,
      ['shim', id],
      'the container process exited during create',
      terminalWanted(ctx, id) ? consoleSocket : undefined,
    );
  } catch (err) {
    ctx.store.remove(id);
    throw err;
  }
}

/** `vmcache create ID --bundle DIR [--pid-file F]`: a created container, its process not yet started. */
export async function create(ctx: RuntimeContext, id: string, opts: CreateOptions): Promise<number> {
  await sweepOrphans(ctx);
  reserve(ctx, id, opts.bundle ?? '.', opts.consoleSocket !== undefined);
  const pid = await spawnShim(ctx, id, opts.consoleSocket);
  if (opts.pidFile) writePidFile(opts.pidFile, pid);
  return 0;
}
