import { signalExitCode } from '../platform/signals.js';
import type { ExitStatus } from '../protocol/agent/client.js';

/** How a process ended, as the Task API reports it: an exit status (128 + N for signal N) and when. */
export interface TaskExit {
  status: number;
  /** Wall-clock ms since the epoch. */
  at: number;
}

/** The exit status containerd expects for an agent's ExitStatus. */
export function exitStatusOf(st: ExitStatus): number {
  return st.code ?? signalExitCode(st.signal ?? 'SIGKILL');
}

/**
 * The exit status of a process whose start failed, as a shell reports it: 127 when the program is not there,
 * 126 when it could not be run. containerd sees the process stopped with it, so that its Delete (and the
 * container's) go through as they do after runc's failed create.
 */
export function startFailureStatus(err: unknown): number {
  return /not found|no such file/i.test(err instanceof Error ? err.message : String(err)) ? 127 : 126;
}

/**
 * The end of one process the shim serves (a container's or an exec's): settled once, by whoever knows first
 * (the process's exit, a kill before start, the VM's death), and awaited by Wait, Delete and the exit event.
 */
export class ProcessExit {
  #exit: TaskExit | null = null;
  #resolve!: (e: TaskExit) => void;
  /** Resolves with the exit once the process has ended. */
  readonly exited: Promise<TaskExit>;

  constructor() {
    this.exited = new Promise((r) => {
      this.#resolve = r;
    });
  }

  /** The exit, once settled; null while the process lives. */
  get exit(): TaskExit | null {
    return this.#exit;
  }

  /** Settles with `status` at `at`; false (and nothing changes) when it was settled already. */
  settle(status: number, at: number): boolean {
    if (this.#exit) return false;
    this.#exit = { status, at };
    this.#resolve(this.#exit);
    return true;
  }
}
