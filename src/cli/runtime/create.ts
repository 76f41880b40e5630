import { existsSync, statfsSync } from 'node:fs';
import { join } from 'node:path';
import { readBundle } from '../../oci/bundle.js';
import { planMounts } from '../../sandbox/mounts.js';
import { namespacesToShare } from '../../sandbox/namespaces.js';
import { checkPodNetns } from '../../sandbox/network.js';
import { checkSupported } from '../../sandbox/process.js';
import { checkId } from '../../sandbox/state-store.js';
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
 * rejected up front is, so that bad input leaves nothing behind.
 */
export function reserve(ctx: RuntimeContext, id: string, bundleDir: string): void {
  checkId(id);
  const cfg = readBundle(bundleDir, (p) => statfsSync(p));
  checkSupported(cfg);
  planMounts(cfg.mounts, id, cfg.shmSize, existsSync, join(cfg.bundle, 'config.json'));
  const member = cfg.containerType === 'container' && cfg.sandboxId !== id;
  // Namespace paths are checked before anything is taken (a member's may name only its sandbox's; a member
  // of a sandbox that does not exist is refused by its creation, with that reason).
  const sandbox = member ? sandboxPid(ctx, cfg.sandboxId!) : null;
  if (!member || sandbox !== null) namespacesToShare(cfg, sandbox);
  if (cfg.netns && !member) checkPodNetns(cfg.netns);
  hostVmSpec(ctx);
  ctx.store.reserve({
    version: 1,
    id,
    bundle: cfg.bundle,
    rootfs: cfg.rootfs,
    created: new Date(ctx.clock.now()).toISOString(),
    status: 'creating',
    shim: null,
    vmId: null,
    exit: null,
    annotations: cfg.annotations,
    sandboxId: member ? (cfg.sandboxId ?? null) : null,
  });
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
export async function spawnShim(ctx: RuntimeContext, id: string): Promise<number> {
  try {
    return await spawnReporting(ctx, ['shim', id], 'the container process exited during create');
  } catch (err) {
    ctx.store.remove(id);
    throw err;
  }
}

/** `vmcache create ID --bundle DIR [--pid-file F]`: a created container, its process not yet started. */
export async function create(ctx: RuntimeContext, id: string, opts: CreateOptions): Promise<number> {
  await sweepOrphans(ctx);
  reserve(ctx, id, opts.bundle ?? '.');
  const pid = await spawnShim(ctx, id);
  if (opts.pidFile) writePidFile(opts.pidFile, pid);
  return 0;
}
