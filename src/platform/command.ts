import { spawn } from 'node:child_process';
import { type ErrorCode, VmcError } from '../errors.js';

/** Result of a finished one-shot command. */
export interface CommandResult {
  stdout: Buffer;
  stderr: string;
}

/** Options of a one-shot command. */
export interface CommandOptions {
  cwd?: string;
  input?: Buffer;
  /** Error code used when the command fails. */
  errorCode?: ErrorCode;
  env?: NodeJS.ProcessEnv;
  /** argv[0] when it differs from `cmd` (OCI hooks give it in `args[0]`). */
  argv0?: string;
  /** Killed (SIGKILL) and failed after this long; no bound when absent. */
  timeoutMs?: number;
}

/** Runs a helper program to completion. Injected so that builders can be tested with fakes. */
export type CommandRunner = (
  cmd: string,
  args: readonly string[],
  opts?: CommandOptions,
) => Promise<CommandResult>;

/** Runs `cmd` and collects its output; fails with the command line and the tail of its stderr. */
export const runCommand: CommandRunner = (cmd, args, opts = {}) =>
  new Promise((resolve, reject) => {
    const child = spawn(cmd, args, {
      cwd: opts.cwd,
      env: opts.env ?? process.env,
      stdio: ['pipe', 'pipe', 'pipe'],
      ...(opts.argv0 === undefined ? {} : { argv0: opts.argv0 }),
    });
    let timedOut = false;
    const timer =
      opts.timeoutMs === undefined
        ? undefined
        : setTimeout(() => {
            timedOut = true;
            child.kill('SIGKILL');
            // A grandchild may still hold the pipes; the command is over for us all the same.
            child.stdout.destroy();
            child.stderr.destroy();
          }, opts.timeoutMs);
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (c: Buffer) => out.push(c));
    child.stderr.on('data', (c: Buffer) => err.push(c));
    child.stdin.on('error', () => {}); // the command may exit without reading its input
    child.stdin.end(opts.input);
    const code = opts.errorCode ?? 'VMC_ERR_HOST_PREREQ';
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(new VmcError(code, `cannot run ${cmd}: ${e.message}`, { cause: e, details: { cmd, args } }));
    });
    child.on('close', (status, signal) => {
      clearTimeout(timer);
      const stderr = Buffer.concat(err).toString('utf8');
      if (status === 0) return resolve({ stdout: Buffer.concat(out), stderr });
      const tail = stderr.trim().split('\n').slice(-5).join('\n');
      const why = timedOut ? `did not finish within ${opts.timeoutMs} ms` : (signal ?? `exit ${status}`);
      reject(
        new VmcError(code, `${cmd} ${args.join(' ')} failed (${why}): ${tail}`, {
          details: { cmd, args, status, signal, stderr: tail },
        }),
      );
    });
  });
