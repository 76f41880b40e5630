import { relayStdin } from '../platform/streams.js';
import type { ExecProcess } from '../protocol/agent/messages.js';
import type { ControlReply } from '../protocol/control/messages.js';
import type { ExecSession } from '../protocol/control/server.js';
import type { ControlledShim } from '../sandbox/control-handler.js';
import { exitStatusOf, ProcessExit, startFailureStatus } from './process-state.js';
import type { IoPaths, TaskIo } from './task-io.js';
import type { TaskTerminal } from './task-terminal.js';

/** A process added to a running container by Exec, started by Start with its exec id. */
export class ExecTask {
  readonly end = new ProcessExit();
  #session: ExecSession | null = null;
  #started = false;

  constructor(
    readonly execId: string,
    readonly process: ExecProcess,
    readonly io: TaskIo,
    /** The FIFO paths `io` is on, as State reports them. */
    readonly paths: IoPaths,
    /** The size of the exec's guest pty when it has one (`terminal: true`; ResizePty sets it), or null. */
    readonly terminal: TaskTerminal | null,
    private readonly now: () => number,
  ) {}

  /** created, running or stopped, as State reports it. */
  get status(): 'created' | 'running' | 'stopped' {
    return this.end.exit ? 'stopped' : this.#started ? 'running' : 'created';
  }

  /**
   * Starts the process through `shim` (the container's own exec path: the sandbox's agent, or a member's
   * relay): output goes to the FIFOs, the exit settles `end` and closes them. `pid` stands for the process.
   */
  async start(shim: ControlledShim, pid: number): Promise<void> {
    if (this.#started) throw new Error(`exec ${this.execId} was started already`);
    this.#started = true;
    const reply = (r: ControlReply) => {
      if (r.t === 'out') (r.fd === 1 ? this.io.stdout : this.io.stderr).write(Buffer.from(r.data, 'base64'));
      else if (r.t === 'exit') this.#finish(exitStatusOf(r));
    };
    try {
      const terminal = this.terminal ? { terminal: this.terminal.size() } : {};
      this.#session = await shim.exec(
        { t: 'exec', pid, process: this.process, ...terminal },
        reply,
        () => undefined,
      );
    } catch (err) {
      // The process never ran: it has exited as a shell would report it, and its FIFOs close (ctr waits for
      // its copy of them to end before it deletes the exec).
      this.#finish(startFailureStatus(err));
      throw err;
    }
    const session = this.#session;
    relayStdin(this.io.stdin, session);
    this.terminal?.onResize((size) => void session.resize(size).catch(() => undefined));
  }

  /** Delivers `signal`; an exec never started just ends, as if killed by it. */
  async kill(signal: string, status: number): Promise<void> {
    if (!this.#session) {
      this.#finish(status);
      return;
    }
    await this.#session.kill(signal);
  }

  /** The process's stdin reaches EOF. */
  closeStdin(): void {
    this.io.closeStdin();
  }

  /** Ends the process, unless ended: its container (and so its relay) is gone. */
  abandon(status: number): void {
    this.#session?.abandon();
    this.#finish(status);
  }

  #finish(status: number): void {
    if (this.end.settle(status, this.now())) this.io.close();
  }
}
