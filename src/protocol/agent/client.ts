import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { type Duplex, PassThrough } from 'node:stream';
import { VmcError } from '../../errors.js';
import { type Clock, systemClock } from '../../platform/clock.js';
import { encodeFrame, FrameDecoder } from './framing.js';
import {
  AGENT_PROTOCOL_VERSION,
  type AgentRequest,
  type ExecRequest,
  type GuestMessage,
  parseGuestMessage,
} from './messages.js';

/** How a guest process ended. */
export interface ExitStatus {
  /** Exit code, or null when killed by a signal. */
  code: number | null;
  /** Signal name, or null. */
  signal: string | null;
}

/** The guest session established by the handshake. */
export interface AgentSession {
  session: number;
  agentPid: number;
  version: number;
}

/** Options of the agent client. */
export interface AgentClientOptions {
  clock?: Clock;
  /** Default request timeout. */
  requestTimeoutMs?: number;
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
  #exit: ExitStatus | null = null;
  #lost: Error | null = null;
  readonly #waiters: Array<{ resolve: (s: ExitStatus) => void; reject: (e: Error) => void }> = [];

  readonly #client: AgentClient;

  constructor(
    readonly proc: number,
    client: AgentClient,
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

  /** Sends a signal (a name such as `SIGTERM`) to the process. */
  async kill(signal = 'SIGTERM'): Promise<void> {
    await this.#client.request({ op: 'signal', proc: this.proc, signal });
  }

  /** Resolves with the exit status. */
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

  /** @internal The connection closed before the process exited: its status can no longer be known. */
  _lostConnection(err: Error): void {
    this.#lost = err;
    this.stdout.end();
    this.stderr.end();
    for (const w of this.#waiters.splice(0)) w.reject(err);
  }
}

interface Pending {
  op: string;
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
  cancel: () => void;
}

/**
 * Host side of the agent protocol over one connection to the VM's `agent.sock`.
 *
 * The handshake makes hand-off safe: the client sends `hello` with a fresh nonce (repeating it, because the
 * guest discards unread input when it reopens its port after the previous owner left) and ignores every frame
 * until `hello-ok` echoes that nonce. Stale bytes meant for a previous owner are thus never mistaken for answers.
 */
export class AgentClient extends EventEmitter {
  readonly #stream: Duplex;
  readonly #clock: Clock;
  readonly #timeoutMs: number;
  readonly #decoder = new FrameDecoder();
  readonly #pending = new Map<number, Pending>();
  readonly #procs = new Map<number, AgentProcess>();
  #nextId = 1;
  #closed: Error | null = null;
  #nonce: string | null = null;
  #onHello: ((m: AgentSession) => void) | null = null;
  #greet: (() => void) | null = null;
  /** The session, once the handshake completed. */
  session: AgentSession | null = null;

  constructor(stream: Duplex, opts: AgentClientOptions = {}) {
    super();
    this.#stream = stream;
    this.#clock = opts.clock ?? systemClock;
    this.#timeoutMs = opts.requestTimeoutMs ?? 30_000;
    stream.on('data', (c: Buffer) => this.#onData(c));
    stream.on('error', (e) =>
      this.#fail(new VmcError('VMC_ERR_AGENT_CLOSED', `agent stream error: ${e.message}`, { cause: e })),
    );
    stream.on('close', () => this.#fail(new VmcError('VMC_ERR_AGENT_CLOSED', 'agent connection closed')));
    stream.on('end', () =>
      this.#fail(new VmcError('VMC_ERR_AGENT_CLOSED', 'agent connection closed by the guest')),
    );
  }

  /**
   * Performs the handshake. `resendMs`: how often `hello` is repeated while unanswered (the guest may drop it
   * while reopening its port; 200 ms is well above the guest's reopen time and cheap).
   */
  async handshake(timeoutMs = 30_000, resendMs = 200): Promise<AgentSession> {
    if (this.#closed) throw this.#closed;
    const nonce = randomBytes(12).toString('hex');
    this.#nonce = nonce;
    const send = () => {
      if (!this.#closed)
        this.#stream.write(encodeFrame({ t: 'hello', nonce, version: AGENT_PROTOCOL_VERSION }));
    };
    return new Promise<AgentSession>((resolve, reject) => {
      let stopResend = () => {};
      const tick = () => {
        send();
        stopResend = this.#clock.setTimeout(tick, resendMs);
      };
      const cancel = this.#clock.setTimeout(() => {
        cleanup();
        reject(
          new VmcError(
            'VMC_ERR_AGENT_TIMEOUT',
            `guest agent did not answer the handshake within ${timeoutMs} ms`,
          ),
        );
      }, timeoutMs);
      const onClosed = (e: Error) => {
        cleanup();
        reject(e);
      };
      const cleanup = () => {
        cancel();
        stopResend();
        this.#onHello = null;
        this.#greet = null;
        this.off('closed', onClosed);
      };
      this.#greet = send;
      this.#onHello = (s) => {
        cleanup();
        this.session = s;
        resolve(s);
      };
      this.once('closed', onClosed);
      tick();
    });
  }

  /** Sends a request and resolves with its result. */
  request<T = unknown>(req: AgentRequest, timeoutMs = this.#timeoutMs): Promise<T> {
    if (this.#closed) return Promise.reject(this.#closed);
    if (!this.session)
      return Promise.reject(new VmcError('VMC_ERR_INVALID_STATE', 'agent request before handshake'));
    const id = this.#nextId++;
    return new Promise<T>((resolve, reject) => {
      const cancel = this.#clock.setTimeout(() => {
        this.#pending.delete(id);
        reject(
          new VmcError(
            'VMC_ERR_AGENT_TIMEOUT',
            `guest agent did not answer ${req.op} within ${timeoutMs} ms`,
          ),
        );
      }, timeoutMs);
      this.#pending.set(id, { op: req.op, resolve: resolve as (v: unknown) => void, reject, cancel });
      this.#stream.write(encodeFrame({ t: 'req', id, ...req }));
    });
  }

  /** Starts a process in the guest. */
  async exec(exec: ExecRequest): Promise<AgentProcess> {
    const { proc, pid } = await this.request<{ proc: number; pid: number }>({ op: 'exec', exec });
    let p = this.#procs.get(proc);
    if (!p) {
      p = new AgentProcess(proc, this);
      this.#procs.set(proc, p);
    }
    p.pid = pid;
    return p;
  }

  /** True once closed. */
  get closed(): boolean {
    return this.#closed !== null;
  }

  /** Closes the connection. Guest processes keep running; their output is no longer delivered. Idempotent. */
  close(): void {
    this.#fail(new VmcError('VMC_ERR_AGENT_CLOSED', 'agent client closed'));
    this.#stream.destroy();
  }

  #onData(chunk: Buffer): void {
    for (const f of this.#decoder.push(chunk)) {
      if (!f.ok) continue; // garbage from a previous owner's session; resynchronised by the decoder
      const parsed = parseGuestMessage(f.value);
      if (!parsed.ok) {
        this.emit('protocol-error', parsed.error);
        continue;
      }
      this.#dispatch(parsed.msg);
    }
  }

  #dispatch(m: GuestMessage): void {
    if (!this.session) {
      // Before the handshake completes, only our own hello-ok counts.
      if (m.t === 'hello-ok' && m.nonce === this.#nonce) {
        this.#onHello?.({ session: m.session, agentPid: m.agentPid, version: m.version });
      } else if (m.t === 'ready') {
        // The guest just (re)opened its port, which discards unread input: greet again at once rather than
        // waiting for the resend timer.
        this.#greet?.();
      }
      return;
    }
    switch (m.t) {
      case 'res': {
        const p = this.#pending.get(m.id);
        if (!p) return;
        this.#pending.delete(m.id);
        p.cancel();
        if (m.ok) p.resolve(m.result);
        else
          p.reject(
            new VmcError('VMC_ERR_AGENT_REQUEST', `guest agent ${p.op}: ${m.error.message}`, {
              details: { guestCode: m.error.code },
            }),
          );
        return;
      }
      case 'out':
      case 'exit': {
        let p = this.#procs.get(m.proc);
        if (!p) {
          p = new AgentProcess(m.proc, this);
          this.#procs.set(m.proc, p);
        }
        if (m.t === 'out') p._output(m.fd, Buffer.from(m.data, 'base64'));
        else {
          this.#procs.delete(m.proc);
          p._exited({ code: m.code, signal: m.signal });
        }
        return;
      }
      default:
        return; // ready / late hello-ok: nothing to do
    }
  }

  #fail(err: Error): void {
    if (this.#closed) return;
    this.#closed = err;
    for (const p of this.#pending.values()) {
      p.cancel();
      p.reject(err);
    }
    this.#pending.clear();
    for (const p of this.#procs.values()) p._lostConnection(err);
    this.#procs.clear();
    this.emit('closed', err);
  }
}
