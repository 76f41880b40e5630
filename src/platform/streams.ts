import type { Readable } from 'node:stream';

/**
 * Resolves once `s` has delivered all its data ('end'). A process's exit can be known before the last of its
 * output has been emitted to a listener (stream data is delivered on a later tick), so whoever collects
 * output waits for this as well as for the exit.
 */
export function ended(s: Readable): Promise<void> {
  return s.readableEnded ? Promise.resolve() : new Promise((r) => s.once('end', r));
}
