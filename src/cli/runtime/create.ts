import { spawn } from 'node:child_process';
import { existsSync, statfsSync } from 'node:fs';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { type ErrorCode, ErrorCodes, VmcError } from '../../errors.js';
import { readBundle } from '../../oci/bundle.js';
import { checkSupported } from '../../sandbox/container.js';
import { planMounts } from '../../sandbox/mounts.js';
import { checkId } from '../../sandbox/state-store.js';
import { sweepOrphans } from '../../vm/sweep.js';
import { hostVmSpec } from '../common.js';
import { forwardedGlobals, type RuntimeContext, writePidFile } from './common.js';

/** Options of `create` (runc's). */
export interface CreateOptions {
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
  });
}

/** What the host-side process reports on its status pipe once the container is created (or not). */
export type ShimReport = { ok: true } | { ok: false; code: string; message: string };

/**
 * Starts the container's host-side process (`vmcache shim ID`, see shim.ts) and waits until it reports that the
 * container is created. It is started in a session of its own, inherits this process's stdio (the container's),
 * and is not waited for: when this process exits it is re-parented to the caller's subreaper (containerd's shim,
 * conmon), which collects its exit status, the container's. Returns its pid.
 */
export async function spawnShim(ctx: RuntimeContext, id: string): Promise<number> {
  const child = spawn(process.execPath, [process.argv[1]!, ...forwardedGlobals(ctx.global), 'shim', id], {
    stdio: ['inherit', 'inherit', 'inherit', 'pipe'],
    detached: true,
  });
  const status = child.stdio[3] as Readable;
  let text = '';
  status.on('data', (d: Buffer) => {
    text += d.toString();
  });
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  await new Promise<void>((resolve) => {
    child.once('error', () => resolve());
    status.once('close', () => resolve());
  });
  let report: ShimReport;
  try {
    report = JSON.parse(text) as ShimReport;
  } catch {
    report = {
      ok: false,
      code: 'VMC_ERR_CONTAINER_START',
      message: 'the container process exited during create',
    };
  }
  if (!report.ok) {
    await exited; // it undid its work (VM, mounts, socket) before exiting
    ctx.store.remove(id);
    const code = (report.code in ErrorCodes ? report.code : 'VMC_ERR_CONTAINER_START') as ErrorCode;
    throw new VmcError(code, report.message);
  }
  child.unref();
  return child.pid!;
}

/** `vmcache create ID --bundle DIR [--pid-file F]`: a created container, its process not yet started. */
export async function create(ctx: RuntimeContext, id: string, opts: CreateOptions): Promise<number> {
  await sweepOrphans(ctx);
  reserve(ctx, id, opts.bundle ?? '.');
  const pid = await spawnShim(ctx, id);
  if (opts.pidFile) writePidFile(opts.pidFile, pid);
  return 0;
}
