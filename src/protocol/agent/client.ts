import { randomBytes } from 'node:crypto';
import type { Duplex } from 'node:stream';
import { isVmcError, VmcError } from '../../errors.js';
import { type Clock, systemClock } from '../../platform/clock.js';
import { type Logger, nullLogger } from '../../platform/logger.js';
import { ended } from '../../platform/streams.js';
import { shownValue } from '../guards.js';
import { PendingRequests } from '../pending.js';
import { StreamClient } from '../stream-client.js';
import { encodeFrame, FrameDecoder } from './framing.js';
import {
  AGENT_PROTOCOL_VERSION,
  type AgentRequest,
  type ExecRequest,
  type GuestMessage,
  type HelloTimes,
  parseGuestMessage,
} from './messages.js';
import { AgentProcess, type ExitStatus, type RequestTrace, type RunResult } from './process.js';

// The process handle is part of this client's API: importers of the client find it here too.
export { AgentProcess, type ExitStatus, type RequestTrace, type RunResult };

/** How the handshake went, on both clocks. */
export interface HandshakeTrace {
  /** Host monotonic ms: the first hello was sent. */
  startedMs: number;
  /** Host monotonic ms: the chunk holding our hello-ok arrived. */
  answeredMs: number;
  /** Hellos sent (the guest may drop the first ones while it reopens its port). */
  hellos: number;
  /** The guest's times (µs of its monotonic clock), or null from an agent that does not report them. */
  guest: HelloTimes | null;
}

/** The guest session established by the handshake. */
export interface AgentSession {
  session: number;
  agentPid: number;
  version: number;
  trace: HandshakeTrace;
}

/** A request's result with its trace. */
export interface Traced<T> {
  result: T;
  trace: RequestTrace;
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

/** What the client keeps of a request while it waits for the reply. */
interface RequestMeta {
  op: string;
  /** Host monotonic ms when the request was written. */
  sentMs: number;
  /**
   * Turns the result into the resolved value synchronously, while the reply is dispatched, so that frames
   * following the reply in the same chunk find what it set up (see `exec`). A throw rejects the request.
   */
  adopt?: (result: unknown, trace: RequestTrace) => unknown;
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
 * `close()` leaves guest processes running; their output is no longer delivered and their `wait()` fails.
 */
export class AgentClient extends StreamClient {
  readonly #clock: Clock;
  readonly #timeoutMs: number;
  readonly #livenessMs: number;
  readonly #name: string | undefined;
  readonly #logger: Logger;
  readonly #decoder = new FrameDecoder();
  readonly #pending: PendingRequests<number, RequestMeta>;
  readonly #procs = new Map<number, Tracked>();
  /** Liveness checks are off while the guest is frozen; the epoch tells a check that a freeze happened. */
  #suspended = false;
  #epoch = 0;
  /** Set when the agent refused `proc-status` (an image older than the op): no more checks. */
  #livenessUnsupported = false;
  #nextId = 1;
  #nonce: string | null = null;
  #onHello: ((m: Extract<GuestMessage, { t: 'hello-ok' }>, at: number) => void) | null = null;
  #greet: (() => void) | null = null;
  /** The session, once the handshake completed. */
  session: AgentSession | null = null;

  constructor(stream: Duplex, opts: AgentClientOptions = {}) {
    const livenessMs = opts.livenessIntervalMs ?? DEFAULT_LIVENESS_INTERVAL_MS;
    // Checked before the stream is listened to: a refused client leaves the stream as it was.
    if (!(Number.isFinite(livenessMs) && livenessMs > 0))
      throw new VmcError(
        'VMC_ERR_CONFIG_INVALID',
        `livenessIntervalMs must be a positive number of milliseconds, got ${opts.livenessIntervalMs}`,
      );
    super(stream, { code: 'VMC_ERR_AGENT_CLOSED', protocol: 'agent', peer: 'the guest' });
    this.#clock = opts.clock ?? systemClock;
    this.#pending = new PendingRequests(this.#clock);
    this.#timeoutMs = opts.requestTimeoutMs ?? 30_000;
    this.#livenessMs = livenessMs;
    this.#name = opts.name;
    this.#logger = (opts.logger ?? nullLogger).child({ subsystem: 'agent', vm: opts.name });
    stream.on('data', (c: Buffer) => this.#onData(c));
  }

  /**
   * Performs the handshake. `resendMs`: how often `hello` is repeated while unanswered (the guest may drop it
   * while reopening its port; 200 ms is well above the guest's reopen time and cheap).
   */
  async handshake(timeoutMs = 30_000, resendMs = 200): Promise<AgentSession> {
    if (this.closedWith) throw this.closedWith;
    const nonce = randomBytes(12).toString('hex');
    this.#nonce = nonce;
    let hellos = 0;
    const startedMs = this.#clock.monotonic();
    const send = () => {
      if (this.closed) return;
      hellos++;
      this.stream.write(encodeFrame({ t: 'hello', nonce, version: AGENT_PROTOCOL_VERSION }));
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
      this.#onHello = (m, answeredMs) => {
        cleanup();
        const trace = { startedMs, answeredMs, hellos, guest: m.gt ?? null };
        const s = { session: m.session, agentPid: m.agentPid, version: m.version, trace };
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

  /** As `request`, with the request's trace: when it left and its reply came (host), and the guest's times. */
  requestTraced<T = unknown>(req: AgentRequest, timeoutMs = this.#timeoutMs): Promise<Traced<T>> {
    return this.#call<Traced<T>>(req, timeoutMs, (result, trace) => ({ result: result as T, trace }));
  }

  #call<T>(
    req: AgentRequest,
    timeoutMs: number,
    adopt?: (result: unknown, trace: RequestTrace) => T,
  ): Promise<T> {
    if (this.closedWith) return Promise.reject(this.closedWith);
    if (!this.session)
      return Promise.reject(new VmcError('VMC_ERR_INVALID_STATE', 'agent request before handshake'));
    const id = this.#nextId++;
    let frame: Buffer;
    try {
      frame = encodeFrame({ t: 'req', id, ...req });
    } catch (err) {
      // Too large for one frame (VMC_ERR_AGENT_FRAME_TOO_LARGE): never sent, so nothing waits for a reply.
      return Promise.reject(err);
    }
    const reply = this.#pending.add<T>(
      id,
      { op: req.op, sentMs: this.#clock.monotonic(), adopt },
      timeoutMs,
      () =>
        new VmcError('VMC_ERR_AGENT_TIMEOUT', `guest agent did not answer ${req.op} within ${timeoutMs} ms`),
    );
    this.stream.write(frame);
    return reply;
  }

  /**
   * Starts a process in the guest. The process is registered while its reply is dispatched, not when this
   * promise's continuation runs: its output and exit can follow the reply in the same chunk. The exec's trace
   * is the process's `startTrace`.
   */
  exec(exec: ExecRequest): Promise<AgentProcess> {
    return this.#call({ op: 'exec', exec }, this.#timeoutMs, (r, trace) => {
      const p = this.#adopt(r);
      p.startTrace = trace;
      return p;
    });
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

  #onData(chunk: Buffer): void {
    // One clock read per chunk: every frame in it arrived then.
    const at = this.#clock.monotonic();
    for (const f of this.#decoder.push(chunk)) {
      if (!f.ok) continue; // garbage from a previous owner's session; resynchronised by the decoder
      const parsed = parseGuestMessage(f.value);
      if (!parsed.ok) {
        this.emit('protocol-error', parsed.error);
        // A reply we can name fails its request now, with the reason, rather than by its timeout.
        const p = this.session && parsed.id !== undefined ? this.#pending.take(parsed.id) : undefined;
        p?.reject(
          new VmcError('VMC_ERR_AGENT_PROTOCOL', `guest agent ${p.meta.op}: invalid reply: ${parsed.error}`),
        );
        continue;
      }
      this.#dispatch(parsed.msg, at);
    }
  }

  #dispatch(m: GuestMessage, at: number): void {
    if (!this.session) {
      // Before the handshake completes, only our own hello-ok counts.
      if (m.t === 'hello-ok' && m.nonce === this.#nonce) {
        this.#onHello?.(m, at);
      } else if (m.t === 'ready') {
        // The guest just (re)opened its port, which discards unread input: greet again at once rather than
        // waiting for the resend timer.
        this.#greet?.();
      }
      return;
    }
    switch (m.t) {
      case 'res': {
        const p = this.#pending.take(m.id);
        if (!p) return;
        if (!m.ok) {
          p.reject(
            new VmcError('VMC_ERR_AGENT_REQUEST', `guest agent ${p.meta.op}: ${m.error.message}`, {
              details: { guestCode: m.error.code },
            }),
          );
          return;
        }
        let value = m.result;
        try {
          if (p.meta.adopt)
            value = p.meta.adopt(m.result, {
              op: p.meta.op,
              sentMs: p.meta.sentMs,
              receivedMs: at,
              guest: m.gt ?? null,
            });
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

  protected override onClosed(err: Error): void {
    this.#pending.failAll(err);
    for (const t of this.#procs.values()) {
      t.unwatch();
      t.p._lost(err);
    }
    this.#procs.clear();
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
