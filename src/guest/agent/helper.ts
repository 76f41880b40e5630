import { type ChildProcessWithoutNullStreams, spawn } from 'node:child_process';

/**
 * A long-running `vmc-helper serve`: one line per command, one reply line each, in order. Keeping it running
 * turns a reseed or clock set from a 60–150 ms fork+exec under TCG into a pipe round trip. Restarted on demand
 * if it dies.
 */
export class HelperProcess {
  #child: ChildProcessWithoutNullStreams | null = null;
  #buf = '';
  readonly #queue: Array<{ resolve: () => void; reject: (e: Error) => void }> = [];

  constructor(readonly path: string) {}

  /** Starts the helper now (at agent start-up, so the first request does not pay for it). */
  start(): void {
    if (this.#child) return;
    const child = spawn(this.path, ['serve'], { stdio: ['pipe', 'pipe', 'pipe'] });
    child.stdout.on('data', (c: Buffer) => this.#onData(c));
    child.stderr.resume();
    child.stdin.on('error', () => {});
    const gone = (why: string) => {
      if (this.#child !== child) return;
      this.#child = null;
      for (const q of this.#queue.splice(0)) q.reject(new Error(`vmc-helper ${why}`));
    };
    child.on('error', (e) => gone(`failed: ${e.message}`));
    child.on('exit', (code, sig) => gone(`exited (${sig ?? code})`));
    this.#child = child;
  }

  /** Runs `cmd arg` in the helper. */
  run(cmd: 'settime' | 'reseed' | 'syncfs' | 'net' | 'down' | 'nop' | 'churn', arg: string): Promise<void> {
    this.start();
    return new Promise((resolve, reject) => {
      this.#queue.push({ resolve, reject });
      this.#child!.stdin.write(`${cmd} ${arg}\n`);
    });
  }

  #onData(c: Buffer): void {
    this.#buf += c.toString();
    let nl = this.#buf.indexOf('\n');
    while (nl >= 0) {
      const line = this.#buf.slice(0, nl);
      this.#buf = this.#buf.slice(nl + 1);
      const q = this.#queue.shift();
      if (q) {
        if (line === 'ok') q.resolve();
        else q.reject(new Error(line.replace(/^err /, '')));
      }
      nl = this.#buf.indexOf('\n');
    }
  }
}
