import { spawn } from 'node:child_process';
import { closeSync, writeSync } from 'node:fs';
import type { Readable } from 'node:stream';
import { type ErrorCode, ErrorCodes, VmcError } from '../../errors.js';
import { forwardedGlobals, type RuntimeContext } from './common.js';
import { onConsole } from './console.js';

/** What a detached vmcache process reports on fd 3 once it is ready, or why it is not. */
export type Report = { ok: true } | { ok: false; code: string; message: string };

/** The fd a detached process reports on. */
export const REPORT_FD = 3;

/** Writes the report and closes the fd; a parent that is gone is ignored. */
export function sendReport(fd: number, r: Report): void {
  try {
    writeSync(fd, JSON.stringify(r));
    closeSync(fd);
  } catch {
    // nobody is listening any more
  }
}

/**
 * Starts this CLI again with `args` (after the global options, forwarded) in a session of its own, with the
 * caller's stdio and a report pipe on fd 3, and waits for the report. The process is not waited for: when the
 * caller exits it re-parents to the caller's subreaper (containerd's shim, conmon), which collects its exit
 * status. On a failure report, waits until the process has exited (it undoes its work first) and throws the
 * reported error. Returns the pid.
 */
export async function spawnReporting(
  ctx: RuntimeContext,
  args: string[],
  silentExit: string,
  consoleSocket?: string,
): Promise<number> {
  // With a console socket the process runs on a pty whose master goes there (console.ts).
  const { file, args: argv } = consoleSocket
    ? onConsole(ctx, consoleSocket, args, REPORT_FD)
    : { file: process.execPath, args: [process.argv[1]!, ...forwardedGlobals(ctx.global), ...args] };
  const child = spawn(file, argv, {
    stdio: ['inherit', 'inherit', 'inherit', 'pipe'],
    detached: true,
  });
  const pipe = child.stdio[REPORT_FD] as Readable;
  let text = '';
  pipe.on('data', (d: Buffer) => {
    text += d.toString();
  });
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  await new Promise<void>((resolve) => {
    child.once('error', () => resolve());
    pipe.once('close', () => resolve());
  });
  let report: Report;
  try {
    report = JSON.parse(text) as Report;
  } catch {
    report = { ok: false, code: 'VMC_ERR_CONTAINER_START', message: silentExit };
  }
  if (!report.ok) {
    await exited;
    const code = (report.code in ErrorCodes ? report.code : 'VMC_ERR_CONTAINER_START') as ErrorCode;
    throw new VmcError(code, report.message);
  }
  child.unref();
  return child.pid!;
}
