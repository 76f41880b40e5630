import { EventEmitter } from 'node:events';
import { PassThrough } from 'node:stream';
import type { AgentRequest, ReplyTimes, WindowSize } from './messages.js';

/** How a guest process ended. */
export interface ExitStatus {
  /** Exit code, or null when killed by a signal. */
  code: number | null;
  /** Signal name, or null. */
  signal: string | null;
}

/** A finished guest process with its collected output. */
export interface RunResult extends ExitStatus {
  stdout: Buffer;
  stderr: Buffer;
}

/** How one request went: host monotonic ms when it was sent and its reply arrived; the guest's own times. */
export interface RequestTrace {
  op: string;
  sentMs: number;
  receivedMs: number;
  /** µs of the guest's monotonic clock, or null from an agent that does not report them. */
  guest: ReplyTimes | null;
}

/** What a process needs of its connection: a way to send requests about it (the agent client). */
export interface ProcessRequests {
  request(req: AgentRequest): Promise<unknown>;
}

/**
 * A process running in the guest. `stdout`/`stderr` are readable streams; `wait()` resolves when the process
 * has exited and all its output was delivered.
 */
export class AgentProcess extends EventEmitter {
  readonly stdout = new PassThrough();
  readonly stderr = new PassThrough();
  /** The process id inside the guest (0 until the exec was answered). */
  pid = 0;
  /**
   * How its exec went (set by the client when the reply arrives): host monotonic ms sent and answered, and
   * the guest's own times, µs (null from an agent that does not report them).
   */
  startTrace: RequestTrace | null = null;
  #exit: ExitStatus | null = null;
  #lost: Error | null = null;
  readonly #waiters: Array<{ resolve: (s: ExitStatus) => void; reject: (e: Error) => void }> = [];

  readonly #client: ProcessRequests;

  constructor(
    readonly proc: number,
    client: ProcessRequests,
  ) {
    super();
    this.#client = client;
  }

  /** Sends bytes to the process's stdin (requires `stdin: true` at exec). */
  async write(data: Buffer | string): Promise<void> {
    const buf = typeof data === 'string' ? Buffer.from(data) : data;
    // Chunk so that each frame stays far below MAX_PAYLOAD after base64.
    for (let i = 0; i < buf.length || i === 0; i += 256 * 1024) {
      await this.#client.request({
        op: 'stdin',
        proc: this.proc,
        data: buf.subarray(i, i + 256 * 1024).toString('base64'),
      });
      if (buf.length === 0) break;
    }
  }

  /** Closes the process's stdin. */
  async end(): Promise<void> {
    await this.#client.request({ op: 'close-stdin', proc: this.proc });
  }

  /** Sets the window size of the process's terminal (requires `terminal` at exec). */
  async resize(size: WindowSize): Promise<void> {
    await this.#client.request({ op: 'resize', proc: this.proc, rows: size.rows, cols: size.cols });
  }

  /** Sends a signal (a name such as `SIGTERM`) to the process. */
  async kill(signal = 'SIGTERM'): Promise<void> {
    await this.#client.request({ op: 'signal', proc: this.proc, signal });
  }

  /**
   * Resolves with the exit status. Rejects with `VMC_ERR_AGENT_CLOSED` when the connection closes first, and
   * with `VMC_ERR_AGENT_PROCESS_LOST` when a liveness check finds the process gone without an exit.
   */
  wait(): Promise<ExitStatus> {
    if (this.#exit) return Promise.resolve(this.#exit);
    if (this.#lost) return Promise.reject(this.#lost);
    return new Promise((resolve, reject) => this.#waiters.push({ resolve, reject }));
  }

  /** @internal */
  _output(fd: 1 | 2, data: Buffer): void {
    (fd === 1 ? this.stdout : this.stderr).write(data);
  }

  /** @internal */
  _exited(status: ExitStatus): void {
    this.#exit = status;
    this.stdout.end();
    this.stderr.end();
    for (const w of this.#waiters.splice(0)) w.resolve(status);
    this.emit('exit', status);
  }

  /** @internal The connection closed, or the agent lost the process, before its exit: it can no longer be known. */
  _lost(err: Error): void {
    this.#lost = err;
    this.stdout.end();
    this.stderr.end();
    for (const w of this.#waiters.splice(0)) w.reject(err);
  }
}
