import type { TerminalPort, WindowSize } from '../platform/terminal.js';
import { bad } from './request-checks.js';

/** The size a task's pty starts with until containerd's first ResizePty (which comes after Start). */
const FIRST_SIZE: WindowSize = { rows: 24, cols: 80 };

/**
 * The terminal of a `terminal: true` task or exec as the shim holds it: the pty itself is in the guest (the
 * helper allocates it and the agent relays its bytes on stdout), so what the host keeps is only its size,
 * set by ResizePty and followed by the guest's pty (TerminalPort's `onResize`, as a CLI's own terminal is).
 */
export class TaskTerminal implements TerminalPort {
  #size: WindowSize = FIRST_SIZE;
  readonly #listeners: Array<(size: WindowSize) => void> = [];

  size(): WindowSize {
    return this.#size;
  }

  onResize(listener: (size: WindowSize) => void): void {
    this.#listeners.push(listener);
  }

  /** ResizePty: the new size reaches the guest's pty (a listener's failure is its own to log). */
  resize(size: WindowSize): void {
    this.#size = size;
    for (const l of this.#listeners) l(size);
  }
}

/**
 * The window size a ResizePtyRequest asks for, or null for 0 × 0 (no size known: a client without a
 * terminal of its own), which changes nothing.
 */
export function ptySize(r: { width: number; height: number }): WindowSize | null {
  if (r.width === 0 && r.height === 0) return null;
  for (const [field, v] of [
    ['width', r.width],
    ['height', r.height],
  ] as const)
    if (!Number.isInteger(v) || v < 1 || v > 65535)
      bad(`ResizePtyRequest.${field}`, 'from 1 to 65535 (or 0 x 0)', v);
  return { rows: r.height, cols: r.width };
}
