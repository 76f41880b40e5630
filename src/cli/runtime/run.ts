import { resolve } from 'node:path';
import { messageOf } from '../../errors.js';
import { PhaseRecorder } from '../../platform/phases.js';
import { rawMode, terminalPort } from '../../platform/terminal.js';
import type { Shim } from '../../sandbox/shim.js';
import { sweepOrphans } from '../../vm/sweep.js';
import { exitLike, type VerbResult } from '../exit.js';
import { writePhases } from '../phases-file.js';
import { type RuntimeContext, writePidFile } from './common.js';
import { rerunOnConsole } from './console.js';
import { bundleWantsTerminal, reserve, spawnShim } from './create.js';
import { poststop } from './delete.js';
import { createRelayed } from './shim.js';
import { start } from './start.js';

/** Options of `run` (runc's). */
interface RunOptions {
  bundle?: string;
  pidFile?: string;
  detach?: boolean;
  consoleSocket?: string;
}

/**
 * `vmcache run ID --bundle DIR`: create and start. In the foreground this process is the container's host-side
 * process: stdio attached, signals relayed, and it exits as the container's process did, after deleting the
 * container (as `runc run` does). With `--detach` the container keeps running after this returns.
 */
export async function run(ctx: RuntimeContext, id: string, opts: RunOptions): Promise<VerbResult> {
  // From this process's start (the monotonic clock is performance.now(), 0 at the process's time origin):
  // the first phase is Node's start-up and the loading of the CLI.
  const rec = new PhaseRecorder(ctx.clock, 0);
  rec.lap('CLI start-up (Node, bundle load, options)');
  const bundle = resolve(opts.bundle ?? '.');
  const terminal = bundleWantsTerminal(bundle);
  // In the foreground with a terminal for a console socket: this process waits while its copy runs on the pty.
  if (terminal && opts.consoleSocket && !opts.detach) {
    const pidFile = opts.pidFile ? ['--pid-file', resolve(opts.pidFile)] : [];
    return rerunOnConsole(ctx, opts.consoleSocket, ['run', '--bundle', bundle, ...pidFile, id]);
  }
  await sweepOrphans(ctx);
  rec.lap('sweep orphans');
  reserve(
    ctx,
    id,
    bundle,
    opts.consoleSocket !== undefined || (!opts.detach && process.stdin.isTTY === true),
  );
  rec.lap('reserve (read the bundle, checks, record creating)');
  if (opts.detach) {
    const pid = await spawnShim(ctx, id, opts.consoleSocket);
    if (opts.pidFile) writePidFile(opts.pidFile, pid);
    await start(ctx, id);
    return 0;
  }
  let shim: Shim;
  try {
    shim = await createRelayed(ctx, id, rec);
  } catch (err) {
    ctx.store.remove(id);
    throw err;
  }
  if (opts.pidFile) writePidFile(opts.pidFile, process.pid);
  // On a person's terminal, keys go to the container's pty as typed (it echoes them).
  const restore = terminal ? rawMode(process.stdin) : () => {};
  try {
    await shim.start({
      stdin: process.stdin,
      stdout: process.stdout,
      stderr: process.stderr,
      terminal: terminalPort(process.stdout),
    });
  } catch (err) {
    await shim.kill('SIGKILL').catch(() => undefined);
    await shim.stopped;
    ctx.store.remove(id);
    throw err;
  }
  const st = await shim.stopped.finally(restore);
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
  rec.lap('poststop hooks, remove the state');
  writePhases(ctx, 'run', rec.report());
  return exitLike(st);
}
