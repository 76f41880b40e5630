import { constants } from 'node:os';

/*
 * Signal names and numbers. Pure (node:os only), so that the guest agent's bundle can import it too.
 */

const SIGNALS = constants.signals as Readonly<Record<string, number>>;

/** A signal named with or without `SIG`, in any case (`TERM`, `sigkill`), as its full name; null if none. */
export function signalByName(name: string): NodeJS.Signals | null {
  const up = name.toUpperCase();
  const full = up.startsWith('SIG') ? up : `SIG${up}`;
  return Object.hasOwn(SIGNALS, full) ? (full as NodeJS.Signals) : null;
}

/** A signal given as a name (see {@link signalByName}) or a number (`9`), as its full name; null if none. */
export function parseSignal(s: string): NodeJS.Signals | null {
  if (!/^[0-9]+$/.test(s)) return signalByName(s);
  const n = Number(s);
  return (Object.keys(SIGNALS).find((k) => SIGNALS[k] === n) as NodeJS.Signals | undefined) ?? null;
}

/** 128 + the signal's number: the exit status shells give a process killed by that signal (128 if unknown). */
export function signalExitCode(signal: string): number {
  return 128 + (Object.hasOwn(SIGNALS, signal) ? SIGNALS[signal]! : 0);
}
