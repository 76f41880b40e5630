import { type ChildProcess, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

/** The repository root (tests run from dist/test/...). */
export const REPO = fileURLToPath(new URL('../../../', import.meta.url));
/** The CLI launcher, exactly as users run it. */
export const VMCACHE = `${REPO}bin/vmcache`;

/** Output of a finished process. */
export interface Finished {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Waits for a child to exit and collects its output. */
export function finished(child: ChildProcess): Promise<Finished> {
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  child.stdout?.on('data', (c: Buffer) => out.push(c));
  child.stderr?.on('data', (c: Buffer) => err.push(c));
  return new Promise((resolve) =>
    child.on('close', (code, signal) =>
      resolve({ code, signal, stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString() }),
    ),
  );
}

/**
 * Runs a program to completion, or kills it after `deadlineMs` (its stderr then says so): no test waits
 * without a bound.
 */
export function run(
  cmd: string,
  args: string[],
  env: NodeJS.ProcessEnv,
  input?: string,
  deadlineMs = 240_000,
): Promise<Finished> {
  const child = spawn(cmd, args, { env, stdio: ['pipe', 'pipe', 'pipe'] });
  child.stdin.on('error', () => {});
  child.stdin.end(input);
  const timer = setTimeout(() => child.kill('SIGKILL'), deadlineMs);
  return finished(child).then((f) => {
    clearTimeout(timer);
    return f.signal === 'SIGKILL' && f.code === null
      ? { ...f, stderr: `${f.stderr}\n(killed: no exit within ${deadlineMs} ms)` }
      : f;
  });
}
