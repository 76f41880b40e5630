import { signalExitCode } from '../platform/signals.js';
import type { ExitStatus } from '../protocol/agent/client.js';

/**
 * An end of the process that an exit code alone cannot express: at once, whatever handles are still open (a
 * relay's listeners, the container's stdio), and, with `signal`, killed by that signal (exiting with `code` only
 * if the signal does not end it). main.ts, the only module that exits, carries it out.
 */
export interface ExitNow {
  readonly exitNow: true;
  readonly code: number;
  readonly signal: NodeJS.Signals | null;
}

/** What a verb returns: an exit code, or an {@link ExitNow}. */
export type VerbResult = number | ExitNow;

/** Exit at once with `code`. */
export function exitNow(code: number): ExitNow {
  return { exitNow: true, code, signal: null };
}

/**
 * Ends this process the way the container's process ended: killed by the same signal, or with its exit code
 * (so that a waiting containerd shim or conmon sees exactly what runc's would).
 */
export function exitLike(st: ExitStatus): ExitNow {
  return {
    exitNow: true,
    code: st.code ?? signalExitCode('SIGKILL'),
    signal: (st.signal as NodeJS.Signals | null) ?? null,
  };
}
