import { type ChildProcess, spawn } from 'node:child_process';
import type { Duplex } from 'node:stream';
import { signalByName } from '../../platform/signals.js';
import { encodeFrame, FrameDecoder } from '../../protocol/agent/framing.js';
import type { GuestErrorCode } from '../../protocol/agent/guest-codes.js';
import {
  AGENT_PROTOCOL_VERSION,
  type AgentRequest,
  type CgroupStats,
  type ExecRequest,
  type GuestMessage,
  type NicConfig,
  parseHostMessage,
  type ReplyTimes,
} from '../../protocol/agent/messages.js';
import { shownValue } from '../../protocol/guards.js';

/** Privileged guest operations, injected so the server can run (and be tested) anywhere. */
export interface GuestOps {
  /**
   * A host connected: a new owner's reseed and clock set follow within milliseconds. Wakes what they need
   * (the helper) now, while the host's hello is on its way. Must not throw.
   */
  connected?(): void;
  reseed(hex: string): Promise<void>;
  setTime(epochNs: string): Promise<void>;
  online(what: { cpus: number; memory: boolean }): Promise<{ cpus: number; memoryBlocks: number }>;
  mountShared(): Promise<{ path: string }>;
  /** Writes back whatever the guest still holds for the share (syncfs); nothing when it is not mounted. */
  syncShared(): Promise<void>;
  /**
   * The command that starts `e` as a container process (the helper's `enter`), with the share mounted. That
   * command reports a setup or exec failure on fd 3 and closes fd 3 when the program runs.
   */
  containerCommand(e: ExecRequest): Promise<{ file: string; args: string[] }>;
  /**
   * Sends `signal` to every process of the container cgroup `name` (none if it does not exist); returns how
   * many were signalled.
   */
  signalCgroup(name: string, signal: NodeJS.Signals): Promise<number>;
  /** Writes limit files of container cgroup `name`; false when it does not exist. */
  updateCgroup(name: string, limits: Record<string, string>): Promise<boolean>;
  /** Usage and limits of container cgroup `name`, or null when it does not exist. */
  cgroupStats(name: string): Promise<CgroupStats | null>;
  /**
   * The name of the NIC with MAC `mac` once the kernel has made it (a hot-plugged NIC appears asynchronously:
   * PCIe hot-plug, then the driver binds); rejects after `timeoutMs`.
   */
  waitForNic(mac: string, timeoutMs: number): Promise<string>;
  /**
   * The name of the spare NIC (protocol/spare-nic.ts) once the agent's start-up warm-up of it is over, or null
   * when this VM has none (or it was already taken).
   */
  spareNic(): Promise<string | null>;
  /** Gives NIC `name` the MTU, addresses and routes of `nic` (and its MAC when `setMac`), and sets its link up. */
  configureNic(name: string, nic: NicConfig, setMac: boolean): Promise<void>;
  /** Runs the process and container start paths once, and mounts the share if asked (see `warm`). */
  warm(share: boolean): Promise<void>;
  /** Runs `passes` passes of fresh machine code through the helper (see the `churn` request). */
  churn(passes: number): Promise<void>;
  info(): Promise<Record<string, unknown>>;
  shutdown(): Promise<void>;
}

/** A signal name as the host sends it (`TERM`, `SIGTERM`, `sigkill`), checked. */
function signalOf(signal: string): NodeJS.Signals {
  const name = signalByName(signal);
  if (!name) throw new RequestError('BAD_SIGNAL', `unknown signal ${signal}`);
  return name;
}

/** A program name for a message: as it is, or previewed when long (a reply must fit in one frame). */
function program(name: string): string {
  return name.length <= 256 ? name : shownValue(name);
}

/** An error the agent reports to the host with a stable code. */
class RequestError extends Error {
  constructor(
    readonly code: GuestErrorCode,
    message: string,
  ) {
    super(message);
  }
}

interface Proc {
  child: ChildProcess;
  session: number;
}

/** Grace period for output after a process exits while a grandchild still holds its pipes (e.g. `cmd &`). */
const OUTPUT_GRACE_MS = 2_000;

/** The guest's monotonic clock in whole microseconds (CLOCK_MONOTONIC, as `process.hrtime` reads it). */
export function monotonicUs(): number {
  return Number(process.hrtime.bigint() / 1000n);
}

/** Options of the agent engine. */
export interface AgentServerOptions {
  /** The clock of the `gt` times in replies (µs); injected so tests can check them. */
  nowUs?: () => number;
}

/** Durations of an exec's steps (µs), filled in while it runs: they go into its reply's `gt`. */
type Steps = Pick<ReplyTimes, 'share' | 'spawn' | 'enter' | 'nicWait' | 'nicConfig'>;

/** How long a `net` request waits for its NIC to appear (hot-plug under TCG takes well under a second). */
const NIC_APPEAR_MS = 20_000;

/**
 * The agent's protocol engine. Processes outlive connections: a process keeps running when its owner
 * disconnects, but its output is only delivered within the session (handshake) that started it.
 */
export class AgentServer {
  #stream: Duplex | null = null;
  #decoder = new FrameDecoder();
  #session = 0;
  #nonce: string | null = null;
  #nextProc = 1;
  readonly #procs = new Map<number, Proc>();
  readonly #nowUs: () => number;
  /** When the current connection was seen (µs, guest monotonic). */
  #connUs = 0;

  constructor(
    readonly ops: GuestOps,
    opts: AgentServerOptions = {},
  ) {
    this.#nowUs = opts.nowUs ?? monotonicUs;
  }

  /**
   * Serves one host connection until it ends; resolves when the stream closes. `connUs`: when the connection
   * was seen (the caller's blocking write returned), reported in `hello-ok`; now by default.
   */
  serve(stream: Duplex, connUs = this.#nowUs()): Promise<void> {
    this.#stream = stream;
    this.#connUs = connUs;
    this.#decoder = new FrameDecoder();
    this.#send({ t: 'ready', version: AGENT_PROTOCOL_VERSION });
    this.ops.connected?.();
    return new Promise((resolve) => {
      stream.on('data', (c: Buffer) => this.#onData(c));
      stream.on('error', () => stream.destroy());
      stream.on('end', () => stream.destroy());
      stream.on('close', () => {
        if (this.#stream === stream) this.#stream = null;
        resolve();
      });
    });
  }

  /** Number of processes still running (for tests and info). */
  get running(): number {
    return this.#procs.size;
  }

  #send(m: GuestMessage): void {
    const s = this.#stream;
    if (!s || s.destroyed) return;
    s.write(encodeFrame(m));
  }

  /** Refuses request `id` with one of the guest's error codes; `rx`: when the request arrived (µs). */
  #fail(id: number, code: GuestErrorCode, message: string, rx: number, steps: Steps = {}): void {
    this.#send({ t: 'res', id, ok: false, error: { code, message }, gt: this.#times(rx, steps) });
  }

  /** The `gt` of a reply written now to a request that arrived at `rx`. */
  #times(rx: number, steps: Steps): ReplyTimes {
    return { rx, tx: this.#nowUs(), ...steps };
  }

  #onData(chunk: Buffer): void {
    // One clock read per chunk: every frame in it arrived then.
    const rx = this.#nowUs();
    for (const f of this.#decoder.push(chunk)) {
      if (!f.ok) continue; // resynchronised on the next marker; nothing to answer
      const parsed = parseHostMessage(f.value);
      if (!parsed.ok) {
        if (parsed.id !== undefined) this.#fail(parsed.id, 'BAD_REQUEST', parsed.error, rx);
        continue;
      }
      const m = parsed.msg;
      if (m.t === 'hello') {
        // A new nonce is a new owner: start a new session. A repeated nonce (the host resends hello until
        // answered) just gets the same answer again.
        if (m.nonce !== this.#nonce) {
          this.#nonce = m.nonce;
          this.#session++;
        }
        this.#send({
          t: 'hello-ok',
          nonce: m.nonce,
          version: AGENT_PROTOCOL_VERSION,
          session: this.#session,
          agentPid: process.pid,
          // The host refuses a hello-ok whose times are out of order, and a refused hello-ok is a failed
          // hand-off: `conn` from another clock than `rx` (a caller's mistake) must not cost the session.
          gt: { conn: Math.min(this.#connUs, rx), rx, tx: this.#nowUs() },
        });
        continue;
      }
      if (this.#nonce === null) {
        this.#fail(m.id, 'NO_SESSION', 'send hello first', rx);
        continue;
      }
      const { t: _t, id, ...req } = m;
      const steps: Steps = {};
      this.#handle(req as AgentRequest, steps).then(
        (result) =>
          this.#send({ t: 'res', id, ok: true, result: result ?? null, gt: this.#times(rx, steps) }),
        (err: unknown) =>
          this.#fail(
            id,
            err instanceof RequestError ? err.code : 'FAILED',
            err instanceof Error ? err.message : String(err),
            rx,
            steps,
          ),
      );
    }
  }

  async #handle(req: AgentRequest, steps: Steps): Promise<unknown> {
    switch (req.op) {
      case 'ping':
        return { pong: true };
      case 'exec':
        return this.#exec(req.exec, steps);
      case 'stdin': {
        const p = this.#proc(req.proc);
        if (!p.child.stdin || p.child.stdin.destroyed)
          throw new RequestError('NO_STDIN', `process ${req.proc} has no open stdin`);
        const data = Buffer.from(req.data, 'base64');
        await new Promise<void>((resolve, reject) =>
          p.child.stdin!.write(data, (e) => (e ? reject(e) : resolve())),
        );
        return null;
      }
      case 'close-stdin':
        this.#proc(req.proc).child.stdin?.end();
        return null;
      case 'resize': {
        // The helper's stand-in reads "ROWS COLS" lines on its fd 4 and sets them on the pty.
        const p = this.#proc(req.proc);
        const sizes = p.child.stdio[4] as NodeJS.WritableStream | null | undefined;
        if (!sizes) throw new RequestError('NO_TERMINAL', `process ${req.proc} has no terminal`);
        sizes.write(`${req.rows} ${req.cols}\n`);
        return null;
      }
      case 'signal': {
        const p = this.#proc(req.proc);
        p.child.kill(signalOf(req.signal));
        return null;
      }
      case 'proc-status': {
        // A process leaves #procs just before its exit frame is written, so "not running" always comes after
        // that frame. One of an earlier session is not running as far as the asker is concerned: its exit goes
        // to nobody.
        const p = this.#procs.get(req.proc);
        return { running: p !== undefined && p.session === this.#session };
      }
      case 'signal-cgroup':
        return { signalled: await this.ops.signalCgroup(req.name, signalOf(req.signal)) };
      case 'update-cgroup':
        if (!(await this.ops.updateCgroup(req.name, req.limits)))
          throw new RequestError('NO_CGROUP', `no container cgroup ${req.name}`);
        return null;
      case 'cgroup-stats': {
        const stats = await this.ops.cgroupStats(req.name);
        if (!stats) throw new RequestError('NO_CGROUP', `no container cgroup ${req.name}`);
        return stats;
      }
      case 'reseed':
        await this.ops.reseed(req.data);
        return null;
      case 'set-time':
        await this.ops.setTime(req.epochNs);
        return null;
      case 'online':
        return this.ops.online({ cpus: req.cpus, memory: req.memory });
      case 'mount-shared':
        return this.ops.mountShared();
      case 'sync':
        await this.ops.syncShared();
        return null;
      case 'net': {
        let t = this.#nowUs();
        const name = req.spare
          ? await this.ops.spareNic()
          : await this.ops.waitForNic(req.nic.mac, NIC_APPEAR_MS);
        if (name === null) throw new Error('this VM has no spare NIC left');
        steps.nicWait = this.#nowUs() - t;
        t = this.#nowUs();
        await this.ops.configureNic(name, req.nic, req.spare === true);
        steps.nicConfig = this.#nowUs() - t;
        return { name };
      }
      case 'warm':
        await this.ops.warm(req.share);
        return null;
      case 'churn':
        await this.ops.churn(req.passes);
        return null;
      case 'info':
        return { ...(await this.ops.info()), processes: this.#procs.size, session: this.#session };
      case 'shutdown':
        // Answer first; the power-off happens after the reply has been written.
        setTimeout(() => void this.ops.shutdown(), 50);
        return null;
    }
  }

  #proc(id: number): Proc {
    const p = this.#procs.get(id);
    if (!p) throw new RequestError('NO_PROCESS', `no running process ${id}`);
    return p;
  }

  async #exec(e: ExecRequest, steps: Steps): Promise<{ proc: number; pid: number }> {
    const id = this.#nextProc++;
    const session = this.#session;
    const env: Record<string, string> = {};
    for (const kv of e.env ?? ['PATH=/usr/sbin:/usr/bin:/sbin:/bin']) {
      const at = kv.indexOf('=');
      if (at > 0) env[kv.slice(0, at)] = kv.slice(at + 1);
    }
    // A container process starts as root in the guest (the helper mounts, enters the root, then becomes
    // uid/gid in cwd); its fd 3 tells whether that worked.
    let t = this.#nowUs();
    const c = e.container ? await this.ops.containerCommand(e) : null;
    if (c) steps.share = this.#nowUs() - t;
    t = this.#nowUs();
    // spawn() returns once the child has exec'd (libuv waits on a close-on-exec pipe): fork + exec.
    const child = spawn(c ? c.file : e.args[0]!, c ? c.args : e.args.slice(1), {
      cwd: c ? '/' : (e.cwd ?? '/'),
      env,
      uid: c ? undefined : e.uid,
      gid: c ? undefined : e.gid,
      // fd 3: the helper's status pipe; fd 4: window sizes for a terminal.
      stdio: [
        e.stdin ? 'pipe' : 'ignore',
        'pipe',
        'pipe',
        ...(c ? ['pipe' as const] : []),
        ...(c && e.terminal ? ['pipe' as const] : []),
      ],
    });
    steps.spawn = this.#nowUs() - t;
    let exited: { code: number | null; signal: string | null } | null = null;
    let started = false;
    let sent = false;
    const finish = () => {
      if (sent || !exited || !started) return;
      sent = true;
      const status = exited;
      // A container's exit is reported only once what it wrote to its root and binds is on the host: writes
      // reach the host as they return (cache=mmap), but pages of a shared writable mapping may still be dirty.
      const flushed = c ? this.ops.syncShared().catch(() => undefined) : Promise.resolve();
      void flushed.then(() => {
        this.#procs.delete(id);
        if (this.#session === session) this.#send({ t: 'exit', proc: id, ...status });
      });
    };
    child.once('exit', (code, signal) => {
      exited = { code, signal };
      setTimeout(finish, OUTPUT_GRACE_MS).unref();
    });
    child.once('close', finish);
    child.stdin?.on('error', () => {}); // EPIPE when the process exits before reading stdin
    // Listen at once: Node discards the unread output of a child that has exited.
    const held: Array<[1 | 2, Buffer]> = [];
    const send = (fd: 1 | 2, data: Buffer) => {
      if (this.#session !== session) return; // a later owner does not get an earlier owner's output
      for (let i = 0; i < data.length; i += 64 * 1024) {
        this.#send({ t: 'out', proc: id, fd, data: data.subarray(i, i + 64 * 1024).toString('base64') });
      }
    };
    const out = (fd: 1 | 2) => (data: Buffer) => (started ? send(fd, data) : held.push([fd, data]));
    child.stdout!.on('data', out(1));
    child.stderr!.on('data', out(2));
    await new Promise<void>((resolve, reject) => {
      child.once('error', (err) => {
        if (child.pid === undefined)
          reject(
            new RequestError(
              'SPAWN_FAILED',
              `cannot run ${program(e.args[0]!)}: ${(err as NodeJS.ErrnoException).code ?? 'spawn failed'}`,
            ),
          );
      });
      child.once('spawn', resolve);
    });
    if (c) {
      t = this.#nowUs();
      const status = child.stdio[3] as NodeJS.ReadableStream;
      let report = '';
      status.on('data', (d: Buffer) => {
        report += d.toString();
      });
      await new Promise((resolve) => status.once('close', resolve));
      steps.enter = this.#nowUs() - t;
      if (report) {
        sent = true;
        throw new RequestError('SPAWN_FAILED', report);
      }
    }
    this.#procs.set(id, { child, session });
    // Output and exit are delivered only after the reply (sent from a microtask once this returns), so the
    // host always knows the process before its output. Until then output is held here.
    setImmediate(() => {
      started = true;
      for (const [fd, data] of held.splice(0)) send(fd, data);
      finish();
    });
    return { proc: id, pid: child.pid! };
  }
}
