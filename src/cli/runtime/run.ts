import { messageOf } from '../../errors.js';
import type { Shim } from '../../sandbox/shim.js';
import { sweepOrphans } from '../../vm/sweep.js';
import { exitLike, type VerbResult } from '../exit.js';
import { type RuntimeContext, writePidFile } from './common.js';
import { reserve, spawnShim } from './create.js';
import { poststop } from './delete.js';
import { createRelayed } from './shim.js';
import { start } from './start.js';

/** Options of `run` (runc's). */
interface RunOptions {
  bundle?: string;
  pidFile?: string;
  detach?: boolean;
}

/**
 * `vmcache run ID --bundle DIR`: create and start. In the foreground this process is the container's host-side
 * process: stdio attached, signals relayed, and it exits as the container's process did, after deleting the
 * container (as `runc run` does). With `--detach` the container keeps running after this returns.
 */
export async function run(ctx: RuntimeContext, id: string, opts: RunOptions): Promise<VerbResult> {
  await sweepOrphans(ctx);
  reserve(ctx, id, opts.bundle ?? '.');
  if (opts.detach) {
    const pid = await spawnShim(ctx, id);
    if (opts.pidFile) writePidFile(opts.pidFile, pid);
    await start(ctx, id);
    return 0;
  }
  let shim: Shim;
  try {
    shim = await createRelayed(ctx, id);
  } catch (err) {
    ctx.store.remove(id);
    throw err;
  }
  if (opts.pidFile) writePidFile(opts.pidFile, process.pid);
  try {
    await shim.start({ stdin: process.stdin, stdout: process.stdout, stderr: process.stderr });
  } catch (err) {
    await shim.kill('SIGKILL').catch(() => undefined);
    await shim.stopped;
    ctx.store.remove(id);
    throw err;
  }
  const st = await shim.stopped;
  ctx.logger.debug(
    { id, ms: Math.round(performance.now()) },
    'container stopped (ms since this process started)',
  );
  process.stdin.destroy();
  try {
    await poststop(ctx, ctx.store.read(id));
    ctx.store.remove(id);
  } catch (err) {
    ctx.logger.warn({ id, err: messageOf(err) }, 'removing the container state');
  }
  return exitLike(st);
}
