import { Duplex, PassThrough } from 'node:stream';

/** Two connected in-memory duplex streams: what one writes, the other reads. */
export function duplexPair(): [Duplex, Duplex] {
  const aToB = new PassThrough();
  const bToA = new PassThrough();
  const a = Duplex.from({ readable: bToA, writable: aToB });
  const b = Duplex.from({ readable: aToB, writable: bToA });
  // Destroying one end aborts the shared PassThroughs; the other end then errors with AbortError, which is
  // how a real socket's peer sees a reset. Tests observe closes through the clients, not these errors.
  for (const s of [a, b]) s.on('error', () => {});
  return [a, b];
}

/** Collects newline-delimited lines written to a stream. */
export function lines(stream: Duplex): { next(): Promise<string> } {
  const queue: string[] = [];
  const waiters: Array<(l: string) => void> = [];
  let buf = '';
  stream.on('data', (c: Buffer) => {
    buf += c.toString();
    let nl = buf.indexOf('\n');
    while (nl >= 0) {
      const l = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      const w = waiters.shift();
      if (w) w(l);
      else queue.push(l);
      nl = buf.indexOf('\n');
    }
  });
  return {
    next: () => {
      const l = queue.shift();
      return l !== undefined ? Promise.resolve(l) : new Promise((r) => waiters.push(r));
    },
  };
}
