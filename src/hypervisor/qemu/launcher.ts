import { spawn } from 'node:child_process';
import { closeSync, existsSync, openSync, readFileSync } from 'node:fs';
import type { Socket } from 'node:net';
import { VmcError } from '../../errors.js';
import type { Clock } from '../../platform/clock.js';
import { identify, type ProcessIdentity } from '../../platform/process.js';
import { connectUnixSocket, tryConnectUnixSocket } from '../../platform/unix-socket.js';
import type { VmFiles } from '../types.js';

/** A process started detached from its launcher. */
export interface DetachedProcess {
  identity: ProcessIdentity;
  /** Resolves with the exit status if the process exits while this launcher still runs. */
  exited: Promise<{ code: number | null; signal: string | null }>;
}

/** Starts a program in its own session with stdout/stderr to `logFile`. Injected so tests can fake QEMU. */
export type DetachedSpawner = (
  cmd: string,
  args: readonly string[],
  logFile: string,
) => Promise<DetachedProcess>;

/**
 * The real spawner. `detached` gives QEMU its own session and process group, so neither a terminal's Ctrl-C nor
 * the exit of the launching process (the cache server handing the VM over, a CLI that finished) reaches it.
 */
export const spawnDetached: DetachedSpawner = (cmd, args, logFile) =>
  new Promise((resolve, reject) => {
    const fd = openSync(logFile, 'a', 0o600);
    let child: ReturnType<typeof spawn>;
    try {
      child = spawn(cmd, args, { detached: true, stdio: ['ignore', fd, fd] });
    } finally {
      closeSync(fd);
    }
    child.once('error', (e) =>
      reject(new VmcError('VMC_ERR_HOST_PREREQ', `cannot start ${cmd}: ${e.message}`, { cause: e })),
    );
    child.once('spawn', () => {
      child.unref();
      const identity = identify(child.pid!);
      if (!identity) {
        reject(new VmcError('VMC_ERR_QEMU_EXITED', `${cmd} exited immediately`));
        return;
      }
      const exited = new Promise<{ code: number | null; signal: string | null }>((res) =>
        child.once('exit', (code, signal) => res({ code, signal })),
      );
      resolve({ identity, exited });
    });
  });

/** Last lines of a log file, for error messages. */
export function tail(path: string, lines = 15): string {
  try {
    return readFileSync(path, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '';
  }
}

/**
 * Waits until QEMU's QMP socket accepts a connection, and returns that connection. Fails early, with the tail
 * of QEMU's stderr, if the process exits first (bad option, missing kernel, ...).
 */
export async function waitForSocket(
  path: string,
  proc: DetachedProcess,
  files: VmFiles,
  clock: Clock,
  timeoutMs: number,
): Promise<Socket> {
  let exit: { code: number | null; signal: string | null } | null = null;
  void proc.exited.then((e) => {
    exit = e;
  });
  const deadline = clock.monotonic() + timeoutMs;
  for (;;) {
    if (exit !== null) {
      const e = exit as { code: number | null; signal: string | null };
      throw new VmcError(
        'VMC_ERR_QEMU_EXITED',
        `QEMU exited before the VM was ready (${e.signal ?? `status ${e.code}`}):\n${tail(files.qemuLog)}`,
        {
          details: { stderr: tail(files.qemuLog) },
        },
      );
    }
    if (existsSync(path)) {
      const s = await tryConnectUnixSocket(path);
      if (s) return s;
    }
    if (clock.monotonic() > deadline) {
      throw new VmcError(
        'VMC_ERR_QEMU_START_TIMEOUT',
        `QEMU did not open ${path} within ${timeoutMs} ms:\n${tail(files.qemuLog)}`,
      );
    }
    // QEMU creates its sockets ~50–300 ms after exec under TCG; polling every 10 ms costs nothing noticeable.
    await clock.sleep(10);
  }
}

/** Connects to a Unix socket, failing with `code`. */
export function connectUnix(
  path: string,
  code: 'VMC_ERR_VM_DEAD' | 'VMC_ERR_AGENT_CLOSED' = 'VMC_ERR_VM_DEAD',
): Promise<Socket> {
  return connectUnixSocket(path).catch((e: Error) => {
    throw new VmcError(code, `cannot connect to ${path}: ${e.message}`, { cause: e });
  });
}
