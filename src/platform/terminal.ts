/**
 * This process's terminal, when its stdio is one: the size a container's pty in the guest starts with and
 * follows (a resize of the host's pty reaches this process as SIGWINCH, which Node turns into `resize`), and
 * raw mode for a person's own terminal while a container has it.
 */
import type { ReadStream, WriteStream } from 'node:tty';

/** A terminal's size in characters. */
export interface WindowSize {
  rows: number;
  cols: number;
}

/** A terminal the host side holds: what a container's pty in the guest takes its size from. */
export interface TerminalPort {
  size(): WindowSize;
  onResize(listener: (size: WindowSize) => void): void;
}

/** The terminal `out` is, or undefined when it is not one (a pipe, a file). */
export function terminalPort(out: NodeJS.WriteStream = process.stdout): TerminalPort | undefined {
  if (!out.isTTY) return undefined;
  const tty = out as WriteStream;
  // 0 when the pty's size was never set (a console socket's receiver may set it later): the usual 24x80.
  const size = (): WindowSize => ({ rows: tty.rows || 24, cols: tty.columns || 80 });
  return { size, onResize: (listener) => tty.on('resize', () => listener(size())) };
}

/**
 * Puts `input` in raw mode when it is a terminal (keys go to the container's pty as typed: its line
 * discipline echoes and turns ^C into SIGINT); returns what restores it. A no-op for anything else.
 */
export function rawMode(input: NodeJS.ReadStream = process.stdin): () => void {
  if (!input.isTTY) return () => {};
  const tty = input as ReadStream;
  const was = tty.isRaw;
  tty.setRawMode(true);
  return () => {
    try {
      tty.setRawMode(was);
    } catch {
      // the terminal is gone
    }
  };
}
