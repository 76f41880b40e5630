import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { type Duplex, PassThrough } from 'node:stream';
import { isVmcError, VmcError } from '../../errors.js';
import { type Clock, systemClock } from '../../platform/clock.js';
import { type Logger, nullLogger } from '../../platform/logger.js';
import { ended } from '../../platform/streams.js';
import { shownValue } from '../guards.js';
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

/** A finished guest process with its collected output. */
export interface RunResult extends ExitStatus {
  stdout: Buffer;
  stderr: Buffer;
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
  /** Default request timeout; also how long a liveness check may go unanswered. */
  requestTimeoutMs?: number;
  /**
   * After this long without a frame about a running process, the client asks the agent whether it still runs
   * (`proc-status`). A process the agent no longer knows, or an agent that does not answer within the request
   * timeout, makes `wait()` reject with `VMC_ERR_AGENT_PROCESS_LOST`. Default 10 s.
   */
  livenessIntervalMs?: number;
  /** The VM's name or id, for error messages. */
  name?: string;
  /** Receives debug traces (frames of unknown processes, lost processes). */
  logger?: Logger;
}

/**
 * Silence this long is unremarkable for a guest process (a sleep, a server), while a check costs one small round
 * trip: 10 s bounds the wait for a process whose exit was lost to 10 s plus the request timeout, at no real cost.
 */
export const DEFAULT_LIVENESS_INTERVAL_MS = 10_000;

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

interface Pending {
  op: string;
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
  cancel: () => void;
  /**
   * Turns the result into the resolved value synchronously, while the reply is dispatched, so that frames
   * following the reply in the same chunk find what it set up (see `exec`). A throw rejects the request.
   */
  adopt?: (result: unknown) => unknown;
}

/** A process the client returned and has not seen end. */
interface Tracked {
  p: AgentProcess;
  /** Monotonic time of the last frame about the process, or of the last liveness answer. */
  seen: number;
  /** Cancels the pending liveness timer. */
  unwatch: () => void;
}

/** Frames about one guest process. */
type ProcFrame = Extract<GuestMessage, { t: 'out' | 'exit' }>;

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
  readonly #livenessMs: number;
  readonly #name: string | undefined;
  readonly #logger: Logger;
  readonly #decoder = new FrameDecoder();
  readonly #pending = new Map<number, Pending>();
  readonly #procs = new Map<number, Tracked>();
  /** Liveness checks are off while the guest is frozen; the epoch tells a check that a freeze happened. */
  #suspended = false;
  #epoch = 0;
  /** Set when the agent refused `proc-status` (an image older than the op): no more checks. */
  #livenessUnsupported = false;
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
    this.#livenessMs = opts.livenessIntervalMs ?? DEFAULT_LIVENESS_INTERVAL_MS;
    if (!(Number.isFinite(this.#livenessMs) && this.#livenessMs > 0))
      throw new VmcError(
        'VMC_ERR_CONFIG_INVALID',
        `livenessIntervalMs must be a positive number of milliseconds, got ${opts.livenessIntervalMs}`,
      );
    this.#name = opts.name;
    this.#logger = (opts.logger ?? nullLogger).child({ subsystem: 'agent', vm: opts.name });
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
    return this.#call<T>(req, timeoutMs);
  }

  #call<T>(req: AgentRequest, timeoutMs: number, adopt?: (result: unknown) => T): Promise<T> {
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
      this.#pending.set(id, { op: req.op, resolve: resolve as (v: unknown) => void, reject, cancel, adopt });
      this.#stream.write(encodeFrame({ t: 'req', id, ...req }));
    });
  }

  /**
   * Starts a process in the guest. The process is registered while its reply is dispatched, not when this
   * promise's continuation runs: its output and exit can follow the reply in the same chunk.
   */
  exec(exec: ExecRequest): Promise<AgentProcess> {
    return this.#call({ op: 'exec', exec }, this.#timeoutMs, (r) => this.#adopt(r));
  }

  /**
   * Runs a process to completion (with `input` on its stdin, if given) and collects its output. The exit can
   * be known before the last output has been emitted to listeners (an exec reply, its output and its exit
   * may arrive in one chunk), so this waits for both streams to end as well: 1 in 300 hand-offs lost its
   * output under load before (found by the reliability suite).
   */
  async run(req: ExecRequest, input?: Buffer | string): Promise<RunResult> {
    const p = await this.exec({ ...req, stdin: input !== undefined });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    p.stdout.on('data', (c: Buffer) => out.push(c));
    p.stderr.on('data', (c: Buffer) => err.push(c));
    const delivered = Promise.all([ended(p.stdout), ended(p.stderr)]);
    if (input !== undefined) {
      await p.write(input);
      await p.end();
    }
    const status = await p.wait();
    await delivered;
    return { ...status, stdout: Buffer.concat(out), stderr: Buffer.concat(err) };
  }

  /**
   * Stops liveness checks while the guest is deliberately frozen (QMP `stop`): a paused guest cannot answer,
   * and its processes must not be reported lost for it. Undone by `resumeLiveness()`.
   */
  suspendLiveness(): void {
    this.#suspended = true;
    this.#epoch++;
  }

  /** Restarts liveness checks after `suspendLiveness()`; the silence count of every process restarts now. */
  resumeLiveness(): void {
    if (!this.#suspended) return;
    this.#suspended = false;
    this.#epoch++;
    const now = this.#clock.monotonic();
    for (const t of this.#procs.values()) t.seen = now;
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
        if (!m.ok) {
          p.reject(
            new VmcError('VMC_ERR_AGENT_REQUEST', `guest agent ${p.op}: ${m.error.message}`, {
              details: { guestCode: m.error.code },
            }),
          );
          return;
        }
        let value = m.result;
        try {
          if (p.adopt) value = p.adopt(m.result);
        } catch (err) {
          p.reject(err as Error);
          return;
        }
        p.resolve(value);
        return;
      }
      case 'out':
      case 'exit': {
        const t = this.#procs.get(m.proc);
        if (t) this.#deliver(t, m);
        // The agent sends a process's frames only after its exec reply, which registers it (#adopt): these are
        // of an exec whose request timed out here, which nobody will claim. Keeping them would leak.
        else this.#logger.debug({ proc: m.proc, frame: m.t }, 'dropped a frame of an unknown guest process');
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
    for (const t of this.#procs.values()) {
      t.unwatch();
      t.p._lost(err);
    }
    this.#procs.clear();
    this.emit('closed', err);
  }

  /** Registers the process an exec reply names, and starts its liveness watch. */
  #adopt(result: unknown): AgentProcess {
    const { proc, pid } = (result ?? {}) as { proc?: unknown; pid?: unknown };
    if (!Number.isSafeInteger(proc) || !Number.isSafeInteger(pid))
      throw new VmcError(
        'VMC_ERR_AGENT_PROTOCOL',
        `guest agent answered exec with ${shownValue(result)}, expected {proc, pid}`,
      );
    const p = new AgentProcess(proc as number, this);
    p.pid = pid as number;
    const t: Tracked = { p, seen: this.#clock.monotonic(), unwatch: () => {} };
    this.#procs.set(p.proc, t);
    if (!this.#livenessUnsupported) this.#arm(t, this.#livenessMs);
    return p;
  }

  #deliver(t: Tracked, m: ProcFrame): void {
    if (m.t === 'out') {
      t.seen = this.#clock.monotonic();
      t.p._output(m.fd, Buffer.from(m.data, 'base64'));
      return;
    }
    this.#procs.delete(m.proc);
    t.unwatch();
    t.p._exited({ code: m.code, signal: m.signal });
  }

  #arm(t: Tracked, ms: number): void {
    t.unwatch = this.#clock.setTimeout(() => void this.#check(t), ms);
  }

  /** The liveness check: after enough silence, asks the agent whether the process still runs. */
  async #check(t: Tracked): Promise<void> {
    const live = () => this.#procs.get(t.p.proc) === t; // false once it exited, was lost or the client closed
    if (!live() || this.#livenessUnsupported) return;
    const idle = this.#clock.monotonic() - t.seen;
    if (this.#suspended || idle < this.#livenessMs) {
      this.#arm(t, this.#suspended ? this.#livenessMs : this.#livenessMs - idle);
      return;
    }
    const epoch = this.#epoch;
    let status: { running?: unknown } | null;
    try {
      status = await this.request<{ running?: unknown } | null>({ op: 'proc-status', proc: t.p.proc });
    } catch (err) {
      if (!live()) return;
      if (isVmcError(err, 'VMC_ERR_AGENT_REQUEST') && err.details.guestCode === 'NO_SESSION') {
        // A guest agent that restarted (it died and the guest's init started it again) knows neither this
        // session nor its processes: their exits will never come.
        this.#lose(t, 'the guest agent restarted and no longer knows this session', err);
        return;
      }
      if (isVmcError(err, 'VMC_ERR_AGENT_REQUEST')) {
        // An agent older than `proc-status` refuses it: waits are unbounded again, as they were before.
        this.#livenessUnsupported = true;
        this.#logger.warn(
          { err: err.message },
          'the guest agent cannot check processes; liveness checks are off',
        );
        return;
      }
      // A freeze during the check explains the silence: look again later.
      if (this.#suspended || epoch !== this.#epoch) this.#arm(t, this.#livenessMs);
      else this.#lose(t, `the guest agent did not answer a liveness check within ${this.#timeoutMs} ms`, err);
      return;
    }
    if (!live()) return;
    // The agent forgets a process and writes its exit in one step, so "not running" here means the exit is lost.
    if (status?.running === false) {
      this.#lose(t, 'the guest agent no longer knows it, and its exit never arrived');
      return;
    }
    t.seen = this.#clock.monotonic();
    this.#arm(t, this.#livenessMs);
  }

  #lose(t: Tracked, why: string, cause?: unknown): void {
    const { proc, pid } = t.p;
    const where = this.#name === undefined ? '' : ` in VM ${this.#name}`;
    this.#procs.delete(proc);
    t.unwatch();
    this.#logger.debug({ proc, pid, why }, 'guest process lost');
    t.p._lost(
      new VmcError(
        'VMC_ERR_AGENT_PROCESS_LOST',
        `guest process ${proc} (pid ${pid})${where} is lost: ${why}`,
        { cause, details: { vm: this.#name, proc, pid } },
      ),
    );
  }
}
