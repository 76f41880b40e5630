/**
 * runc's `--console-socket`: a process of this CLI that stands for a container (or an exec) with a terminal
 * runs on a pty whose master went to the socket (conmon or containerd's runc shim holds it). Node cannot make
 * a pty nor pass an fd over a Unix socket, so `vmc-console` (a small host helper, src/platform/native) makes the
 * pty, sends the master and execs this CLI on the slave.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { VmcError } from '../../errors.js';
import { exitLike, type VerbResult } from '../exit.js';
import { forwardedGlobals, type RuntimeContext } from './common.js';

/** The helper's file name in the image directory (`vmcache image build` compiles it there). */
export const CONSOLE_HELPER = 'vmc-console';

/** The helper's path; an error saying how to get it when it is missing. */
export function consoleHelper(ctx: RuntimeContext): string {
  const p = join(ctx.paths.imageDir, CONSOLE_HELPER);
  if (!existsSync(p))
    throw new VmcError(
      'VMC_ERR_CONSOLE_SOCKET',
      `${p} is missing (it hands a pty to --console-socket): run 'vmcache image build'`,
    );
  return p;
}

/**
 * The program and arguments that run this CLI with `verb` on a new pty whose master goes to `socket`;
 * `reportFd`: where the helper reports its own failure as a detached process's report.
 */
export function onConsole(
  ctx: RuntimeContext,
  socket: string,
  verb: string[],
  reportFd?: number,
): { file: string; args: string[] } {
  const cli = [process.execPath, process.argv[1]!, ...forwardedGlobals(ctx.global), ...verb];
  return {
    file: consoleHelper(ctx),
    args: [...(reportFd === undefined ? [] : ['-r', String(reportFd)]), socket, ...cli],
  };
}

/** Signals passed on to the process on the console while this one waits for it. */
const PASSED_ON: NodeJS.Signals[] = ['SIGTERM', 'SIGINT', 'SIGHUP', 'SIGQUIT', 'SIGUSR1', 'SIGUSR2'];

/**
 * Runs `verb` of this CLI in the foreground on a pty of `socket` and ends as it does (`run` and `exec` with
 * a terminal and a console socket): this process only waits, passing signals on.
 */
export async function rerunOnConsole(
  ctx: RuntimeContext,
  socket: string,
  verb: string[],
): Promise<VerbResult> {
  const { file, args } = onConsole(ctx, socket, verb);
  const child = spawn(file, args, { stdio: 'inherit' });
  const pass = (sig: NodeJS.Signals) => () => child.kill(sig);
  const handlers = PASSED_ON.map((sig) => [sig, pass(sig)] as const);
  for (const [sig, h] of handlers) process.on(sig, h);
  const st = await new Promise<{ code: number | null; signal: string | null }>((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', (code, signal) => resolve({ code, signal }));
  });
  for (const [sig, h] of handlers) process.off(sig, h);
  return exitLike(st);
}
