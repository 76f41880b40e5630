import { readFileSync } from 'node:fs';
import type { Clock } from './clock.js';

/** A process identity that survives pid reuse: the pid plus its start time in clock ticks since boot. */
export interface ProcessIdentity {
  pid: number;
  startTime: number;
}

/**
 * Reads field 22 (starttime) and the state letter from `/proc/PID/stat`. Returns null when the process does not
 * exist. The comm field may contain spaces and parentheses, so parse from the last ')'.
 */
export function readProcStat(pid: number): { startTime: number; state: string; ppid: number } | null {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return null;
  }
  const rest = text.slice(text.lastIndexOf(')') + 2).split(' ');
  // rest[0] is field 3 (state), so field N is rest[N - 3].
  return { state: rest[0] ?? '?', ppid: Number(rest[1]), startTime: Number(rest[19]) };
}

/** Identity of a live process, or null. */
export function identify(pid: number): ProcessIdentity | null {
  const st = readProcStat(pid);
  return st ? { pid, startTime: st.startTime } : null;
}

/** True when the very process `id` names is still running (not gone, not reused, not a zombie). */
export function isAlive(id: ProcessIdentity): boolean {
  const st = readProcStat(id.pid);
  return st !== null && st.startTime === id.startTime && st.state !== 'Z' && st.state !== 'X';
}

/** Sends `signal` only if `id` is still the same process. Returns whether it was sent. */
export function signalIfAlive(id: ProcessIdentity, signal: NodeJS.Signals): boolean {
  if (!isAlive(id)) return false;
  try {
    process.kill(id.pid, signal);
    return true;
  } catch {
    return false;
  }
}

/** Resolves true once `id` has exited (polling every 20 ms), or false after `ms`. */
export async function exitsWithin(id: ProcessIdentity, ms: number, clock: Clock): Promise<boolean> {
  const deadline = clock.monotonic() + ms;
  while (isAlive(id)) {
    if (clock.monotonic() > deadline) return false;
    await clock.sleep(20);
  }
  return true;
}
