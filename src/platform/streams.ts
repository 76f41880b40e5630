import type { Readable } from 'node:stream';

/**
 * Resolves once `s` has delivered all its data ('end'). A process's exit can be known before the last of its
 * output has been emitted to a listener (stream data is delivered on a later tick), so whoever collects
 * output waits for this as well as for the exit.
 */
export function ended(s: Readable): Promise<void> {
  return s.readableEnded ? Promise.resolve() : new Promise((r) => s.once('end', r));
}

/** Where a relayed stdin goes: a process's stdin, local or behind a protocol. */
export interface StdinSink {
  write(data: Buffer): Promise<void> | void;
  /** EOF: the process's stdin is closed. */
  end(): Promise<void> | void;
}

/**
 * Relays `from` to `to` until EOF, which closes `to`; a read error closes it too (the process sees EOF rather
 * than waiting for input that will never come). Writes are chained, so chunks arrive in order and the end
 * comes after the last one; a failed write is dropped (the process is gone, and its exit says so).
 */
export function relayStdin(from: Readable, to: StdinSink): void {
  let chain = Promise.resolve();
  const then = (step: () => Promise<void> | void) => {
    chain = chain.then(step).catch(() => undefined);
  };
  from.on('data', (c: Buffer) => then(() => to.write(c)));
  from.on('end', () => then(() => to.end()));
  from.on('error', () => then(() => to.end()));
}
