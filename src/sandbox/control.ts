/**
 * The control channel of a container's host-side process (the "shim"): a Unix socket on which other vmcache
 * invocations (`start`, `kill`, `pause`, `resume`, `ps`, `exec`) reach the one process that holds the VM's
 * agent connection (virtio-serial serves one host connection). Frames are the agent's (`VMC1` + length + JSON);
 * every frame is validated here, at the boundary, by both ends.
 */
import { createHash } from 'node:crypto';
import { mkdirSync, rmSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { dirname, join } from 'node:path';
import { isVmcError, messageOf, VmcError } from '../errors.js';
import { connectUnixSocket } from '../platform/unix-socket.js';
import { encodeFrame, FrameDecoder } from '../protocol/agent/framing.js';
import {
  type ContainerExec,
  containerError,
  SHAREABLE_NAMESPACES,
  shownValue,
} from '../protocol/agent/messages.js';
import { isContainerId } from './state-store.js';

/** A process to run in a running container (`exec`). */
export interface ExecProcess {
  args: string[];
  env: string[];
  cwd: string;
  uid: number;
  gid: number;
  additionalGids: number[];
}

/** Requests a client sends. */
export type ControlRequest =
  | { t: 'start' }
  | { t: 'kill'; signal: string }
  | { t: 'pause' }
  | { t: 'resume' }
  | { t: 'ps' }
  /**
   * Signals every process of container `name` (the shim's own container, or a member of its sandbox) through
   * its guest cgroup, including what its main process left behind: `kill --all`. Only the VM's owner does it.
   */
  | { t: 'signal-all'; name: string; signal: string }
  /**
   * `pid`: the host process standing for the exec'd process (listed by `ps`). Without `container`, the process
   * joins the sandbox's own container process; with it, it joins the process `container.join` names (a member
   * container's) or, with no `join`, starts a new member container of this sandbox (a pod). `shareSandbox`:
   * the sandbox container's namespaces a new member shares (CRI names them by path).
   */
  | {
      t: 'exec';
      pid: number;
      process: ExecProcess;
      container?: ContainerExec;
      shareSandbox?: Array<(typeof SHAREABLE_NAMESPACES)[number]>;
    }
  // Only after an `exec` was accepted on the same connection:
  | { t: 'stdin'; data: string }
  | { t: 'close-stdin' }
  | { t: 'signal'; signal: string };

/** Replies and events the shim sends. */
export type ControlReply =
  | { t: 'ok'; result?: unknown }
  | { t: 'error'; code: string; message: string }
  | { t: 'out'; fd: 1 | 2; data: string }
  | { t: 'exit'; code: number | null; signal: string | null };

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);
const isUint = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) >= 0;
const isStrings = (v: unknown): v is string[] => Array.isArray(v) && v.every((s) => typeof s === 'string');
const SIGNAL = /^(SIG)?[A-Z0-9+-]{1,16}$/;

/** Validates a request frame; returns the request or an error naming the field. */
export function parseControlRequest(
  v: unknown,
): { ok: true; req: ControlRequest } | { ok: false; error: string } {
  if (!isObj(v)) return { ok: false, error: 'request is not an object' };
  switch (v.t) {
    case 'start':
    case 'pause':
    case 'resume':
    case 'ps':
    case 'close-stdin':
      return { ok: true, req: { t: v.t } };
    case 'kill':
    case 'signal':
      if (typeof v.signal !== 'string' || !SIGNAL.test(v.signal))
        return { ok: false, error: `${v.t}.signal must be a signal name such as SIGTERM` };
      return { ok: true, req: { t: v.t, signal: v.signal } };
    case 'signal-all':
      if (!isContainerId(v.name)) return { ok: false, error: 'signal-all.name must be a container id' };
      if (typeof v.signal !== 'string' || !SIGNAL.test(v.signal))
        return { ok: false, error: 'signal-all.signal must be a signal name such as SIGTERM' };
      return { ok: true, req: { t: 'signal-all', name: v.name, signal: v.signal } };
    case 'stdin':
      if (typeof v.data !== 'string') return { ok: false, error: 'stdin.data must be base64' };
      return { ok: true, req: { t: 'stdin', data: v.data } };
    case 'exec': {
      const p = v.process;
      if (!isUint(v.pid)) return { ok: false, error: 'exec.pid must be a pid' };
      if (!isObj(p)) return { ok: false, error: 'exec.process must be an object' };
      if (!isStrings(p.args) || p.args.length === 0 || p.args[0] === '')
        return { ok: false, error: 'exec.process.args must be a non-empty string array' };
      if (!isStrings(p.env)) return { ok: false, error: 'exec.process.env must be a string array' };
      if (typeof p.cwd !== 'string' || !p.cwd.startsWith('/'))
        return { ok: false, error: 'exec.process.cwd must be an absolute path' };
      if (!isUint(p.uid) || !isUint(p.gid))
        return { ok: false, error: 'exec.process.uid/gid must be integers' };
      if (!Array.isArray(p.additionalGids) || !p.additionalGids.every(isUint))
        return { ok: false, error: 'exec.process.additionalGids must be integers' };
      const req: ControlRequest = { t: 'exec', pid: v.pid, process: p as unknown as ExecProcess };
      if (v.container !== undefined) {
        const err = containerError(v.container);
        if (err) return { ok: false, error: `exec.container.${err}` };
        req.container = v.container as ContainerExec;
      }
      if (v.shareSandbox !== undefined) {
        const k = v.shareSandbox;
        if (!Array.isArray(k) || !k.every((x) => (SHAREABLE_NAMESPACES as readonly unknown[]).includes(x)))
          return {
            ok: false,
            error: `exec.shareSandbox must list some of ${SHAREABLE_NAMESPACES.join(', ')}`,
          };
        req.shareSandbox = k;
      }
      return { ok: true, req };
    }
    default:
      return { ok: false, error: `unknown request ${shownValue(v.t)}` };
  }
}

/** Validates a reply frame. */
export function parseControlReply(v: unknown): ControlReply | null {
  if (!isObj(v)) return null;
  switch (v.t) {
    case 'ok':
      return { t: 'ok', result: v.result };
    case 'error':
      return typeof v.code === 'string' && typeof v.message === 'string'
        ? { t: 'error', code: v.code, message: v.message }
        : null;
    case 'out':
      return (v.fd === 1 || v.fd === 2) && typeof v.data === 'string'
        ? { t: 'out', fd: v.fd, data: v.data }
        : null;
    case 'exit':
      return (v.code === null || Number.isInteger(v.code)) &&
        (v.signal === null || typeof v.signal === 'string')
        ? { t: 'exit', code: v.code as number | null, signal: v.signal as string | null }
        : null;
    default:
      return null;
  }
}

/**
 * The control socket of container `id` under state root `root`. It lives in `<runDir>/ctl/` under a hash of
 * root and id, because a runc-style root plus a 64-hex id (containerd's) would exceed the 107-byte limit of
 * Unix socket paths.
 */
export function controlSocketPath(runDir: string, root: string, id: string): string {
  const h = createHash('sha256').update(`${root}\0${id}`).digest('hex').slice(0, 24);
  return join(runDir, 'ctl', `${h}.sock`);
}

/** A client connection to a shim's control socket. */
export class ControlClient {
  readonly #socket: Socket;
  readonly #decoder = new FrameDecoder();
  #waiter: { resolve: (r: ControlReply) => void; reject: (e: Error) => void } | null = null;
  #closed: Error | null = null;
  /** Called for `out` and `exit` events (exec). */
  onEvent: (r: ControlReply) => void = () => {};

  private constructor(socket: Socket) {
    this.#socket = socket;
    socket.on('data', (c: Buffer) => {
      for (const f of this.#decoder.push(c)) {
        const r = f.ok ? parseControlReply(f.value) : null;
        if (!r) continue;
        if ((r.t === 'ok' || r.t === 'error') && this.#waiter) {
          const w = this.#waiter;
          this.#waiter = null;
          w.resolve(r);
        } else this.onEvent(r);
      }
    });
    const gone = () => {
      this.#closed ??= new VmcError(
        'VMC_ERR_CONTAINER_UNREACHABLE',
        'the container process closed the connection',
      );
      this.#waiter?.reject(this.#closed);
      this.#waiter = null;
      this.onClose();
    };
    socket.on('error', gone);
    socket.on('close', gone);
  }

  /** Called once when the connection ends. */
  onClose: () => void = () => {};

  /** Connects; VMC_ERR_CONTAINER_UNREACHABLE when nobody listens. */
  static connect(path: string, id: string): Promise<ControlClient> {
    return connectUnixSocket(path).then(
      (s) => new ControlClient(s),
      (e) => {
        throw new VmcError(
          'VMC_ERR_CONTAINER_UNREACHABLE',
          `container ${id}: its host-side process does not answer (${messageOf(e)})`,
          { cause: e },
        );
      },
    );
  }

  /** Sends a request and waits for `ok` (its result) or `error` (thrown as VmcError with the shim's code). */
  async request<T = unknown>(req: ControlRequest): Promise<T> {
    if (this.#closed) throw this.#closed;
    const reply = await new Promise<ControlReply>((resolve, reject) => {
      this.#waiter = { resolve, reject };
      this.#socket.write(encodeFrame(req));
    });
    if (reply.t === 'error') {
      const code = reply.code.startsWith('VMC_ERR_') ? reply.code : 'VMC_ERR_CONTAINER_UNREACHABLE';
      throw new VmcError(code as 'VMC_ERR_INVALID_STATE', reply.message);
    }
    return (reply as { result?: T }).result as T;
  }

  /** Sends without waiting for a reply (stdin, signal). */
  send(req: ControlRequest): void {
    if (!this.#closed) this.#socket.write(encodeFrame(req));
  }

  close(): void {
    this.#socket.destroy();
  }
}

/** A process started through the control channel, as its connection sees it (stdin, signals, abandonment). */
export interface ExecSession {
  write(data: Buffer): Promise<void>;
  end(): Promise<void>;
  kill(signal: string): Promise<void>;
  /** The connection that stood for the process is gone. */
  abandon(): void;
}

/** Requests a handler answers; the per-process ones (stdin, close-stdin, signal) go to its session. */
export type HandledRequest = Exclude<ControlRequest, { t: 'stdin' } | { t: 'close-stdin' } | { t: 'signal' }>;

/**
 * Handles one request. Replies through `reply` (`ok` is sent for it when it resolves with nothing and sent
 * nothing itself); an `exec` resolves with the session of the process it started.
 */
export type ControlHandler = (
  req: HandledRequest,
  reply: (r: ControlReply) => void,
  end: () => void,
) => Promise<ExecSession | 'replied' | undefined>;

/** The listening side of a control socket; each connection may carry one exec session. */
export class ControlServer {
  private constructor(
    private readonly server: Server,
    readonly path: string,
  ) {}

  /** Listens on `path` (a stale socket of a crashed process is replaced). */
  static async listen(path: string, handler: ControlHandler): Promise<ControlServer> {
    mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
    rmSync(path, { force: true });
    const server = createServer((sock) => serveConnection(sock, handler));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(path, resolve);
    });
    return new ControlServer(server, path);
  }

  /** Stops listening and removes the socket. Idempotent. */
  async close(): Promise<void> {
    await new Promise((r) => this.server.close(r));
    rmSync(this.path, { force: true });
  }
}

function serveConnection(sock: Socket, handler: ControlHandler): void {
  const decoder = new FrameDecoder();
  const reply = (r: ControlReply) => {
    if (!sock.destroyed && sock.writable) sock.write(encodeFrame(r));
  };
  let session: ExecSession | null = null;
  // One exec a connection (what every client does): a second one's session would replace the first, which
  // would then never be abandoned, its process orphaned (found by fuzzing). Reset when an exec fails.
  let execing = false;
  let closed = false;
  sock.on('error', () => sock.destroy());
  sock.on('close', () => {
    closed = true;
    session?.abandon();
  });
  sock.on('data', (chunk: Buffer) => {
    for (const f of decoder.push(chunk)) {
      const parsed = f.ok ? parseControlRequest(f.value) : { ok: false as const, error: f.reason };
      if (!parsed.ok) {
        reply({ t: 'error', code: 'VMC_ERR_CLI_USAGE', message: parsed.error });
        continue;
      }
      const req = parsed.req;
      if (req.t === 'stdin' || req.t === 'close-stdin' || req.t === 'signal') {
        const s = session;
        if (!s) continue;
        const done =
          req.t === 'stdin'
            ? s.write(Buffer.from(req.data, 'base64'))
            : req.t === 'signal'
              ? s.kill(req.signal)
              : s.end();
        done.catch(() => undefined);
        continue;
      }
      if (req.t === 'exec') {
        if (execing) {
          reply({
            t: 'error',
            code: 'VMC_ERR_CLI_USAGE',
            message: 'exec: this connection carries one already',
          });
          continue;
        }
        execing = true;
      }
      handler(req, reply, () => sock.end()).then(
        (r) => {
          if (r === undefined) reply({ t: 'ok' });
          else if (r !== 'replied') {
            session = r;
            // The peer left while the process was starting: nobody can reach it now, so it is abandoned too.
            if (closed) r.abandon();
          }
        },
        (err: unknown) => {
          if (req.t === 'exec') execing = false;
          reply({
            t: 'error',
            code: isVmcError(err) ? err.code : 'VMC_ERR_CONTAINER_START',
            message: messageOf(err),
          });
        },
      );
    }
  });
}
