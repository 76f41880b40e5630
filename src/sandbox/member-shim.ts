import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { isVmcError, VmcError } from '../errors.js';
import type { ContainerConfig } from '../oci/bundle.js';
import { vmDir } from '../platform/paths.js';
import { relayStdin } from '../platform/streams.js';
import { UndoStack } from '../platform/undo-stack.js';
import type { ExitStatus } from '../protocol/agent/client.js';
import type { ContainerMount } from '../protocol/agent/messages.js';
import { ControlClient } from '../protocol/control/client.js';
import type { ControlReply } from '../protocol/control/messages.js';
import type { ControlServer, ExecSession } from '../protocol/control/server.js';
import { controlSocketPath } from '../protocol/control/socket-path.js';
import { type ControlledShim, type ExecControlRequest, serveControl } from './control-handler.js';
import { runCreateHooks, runPoststartHooks } from './hooks.js';
import { KILLABLE, ShimLifecycle, type ShimStatus } from './lifecycle.js';
import { planMounts } from './mounts.js';
import { namespacesToShare, type SharedNamespace } from './namespaces.js';
import { containerExecOf, execProcessOf, terminalOf } from './process.js';
import { shareInto, unshare } from './share.js';
import type { SandboxDeps, Stdio } from './shim-interface.js';
import { effectiveStatus } from './state-store.js';

/**
 * A pod member: a container whose bundle names a sandbox (CRI container-type `container`). It runs in the
 * sandbox's VM, as Kata runs a pod: its rootfs (and bind sources) are bind-mounted into that VM's share under
 * its own id, and its process, with mount/UTS/IPC namespaces and a root of its own, is started through the
 * sandbox's host-side process (the only holder of the VM's agent connection), which relays its stdio back.
 * When the sandbox stops, its VM goes, and so do its members. `pause` is the sandbox's (it freezes the VM).
 */
export class MemberShim implements ControlledShim {
  readonly #life: ShimLifecycle;
  readonly stopped: Promise<ExitStatus>;
  #resolveStopped!: (s: ExitStatus) => void;
  #relay: ControlClient | null = null;
  #guestPid = 0;
  #server: ControlServer | null = null;
  readonly #execs = new Set<number>();

  private constructor(
    readonly id: string,
    readonly cfg: ContainerConfig,
    readonly sandboxId: string,
    private readonly guestMounts: ContainerMount[],
    private readonly deps: SandboxDeps,
    /** The sandbox's namespaces this member shares (CRI's namespace paths: IPC, UTS). */
    private readonly share: SharedNamespace[] = [],
  ) {
    this.#life = new ShimLifecycle(id, deps);
    this.stopped = new Promise((r) => {
      this.#resolveStopped = r;
    });
  }

  /** The container's state (changed only by its operations). */
  get status(): ShimStatus {
    return this.#life.status;
  }

  /** Joins the sandbox named by the bundle: checks it runs, shares the rootfs into its VM, records `created`. */
  static async create(id: string, cfg: ContainerConfig, deps: SandboxDeps): Promise<MemberShim> {
    const sid = cfg.sandboxId!;
    let sandbox: ReturnType<typeof deps.store.read>;
    try {
      sandbox = deps.store.read(sid);
    } catch (err) {
      if (!isVmcError(err, 'VMC_ERR_CONTAINER_NOT_FOUND')) throw err;
      throw new VmcError(
        'VMC_ERR_CONTAINER_NOT_FOUND',
        `sandbox ${sid} (the sandbox id annotation of container ${id}) does not exist in ${deps.store.dir}`,
      );
    }
    const status = effectiveStatus(sandbox);
    if ((status !== 'running' && status !== 'created') || !sandbox.vmId)
      throw new VmcError(
        'VMC_ERR_INVALID_STATE',
        `sandbox ${sid} is ${status}; container ${id} cannot join it`,
      );
    const plan = planMounts(cfg.mounts, id, cfg.shmSize, existsSync, join(cfg.bundle, 'config.json'));
    const share = namespacesToShare(cfg, sandbox.shim?.pid ?? null);
    const shared = join(vmDir(deps.paths, sandbox.vmId), 'shared');
    const shareDir = join(shared, id);
    const undo = new UndoStack();
    try {
      undo.push('unshare', () => unshare(shareDir, deps));
      await shareInto(shared, cfg.rootfs, `${id}/rootfs`, deps);
      for (const b of plan.host) await shareInto(shared, b.source, b.shareRel, deps);
      await runCreateHooks(id, cfg, deps);
      const m = new MemberShim(id, cfg, sid, plan.guest, deps, share);
      (await m.#connectSandbox()).close(); // it must answer now, not only at start
      m.#server = await serveControl(m, deps);
      undo.push('close control socket', () => m.#server?.close());
      await m.#life.created(sandbox.vmId);
      undo.release();
      return m;
    } catch (err) {
      await undo.unwind();
      throw err;
    }
  }

  /** Starts the member's process through the sandbox, its stdio relayed over the sandbox's control socket. */
  async start(stdio: Stdio): Promise<void> {
    this.#life.need('start', ['created']);
    const c = await this.#connectSandbox();
    // A quick process's exit can come in the same read as the answer to the exec: it stops the member only
    // once the start is recorded, or the record would go from stopped back to running.
    let begun!: () => void;
    const running = new Promise<void>((r) => {
      begun = r;
    });
    c.onEvent = (ev) => {
      if (ev.t === 'out') (ev.fd === 1 ? stdio.stdout : stdio.stderr).write(Buffer.from(ev.data, 'base64'));
      else if (ev.t === 'exit') void running.then(() => this.#stop({ code: ev.code, signal: ev.signal }));
    };
    // The sandbox (and its VM) went away.
    c.onClose = () => void running.then(() => this.#stop({ code: null, signal: 'SIGKILL' }));
    try {
      const terminal = terminalOf(this.cfg, stdio);
      const r = await c.request<{ guestPid: number }>({
        t: 'exec',
        pid: process.pid,
        process: execProcessOf(this.cfg),
        container: containerExecOf(this.id, this.cfg, this.guestMounts),
        ...(this.share.length ? { shareSandbox: this.share } : {}),
        ...(terminal ? { terminal } : {}),
      });
      this.#relay = c;
      this.#guestPid = r.guestPid;
      await this.#life.transition('start', ['created'], 'running');
    } finally {
      begun();
    }
    relayStdin(stdio.stdin, c.stdin());
    if (this.cfg.process.terminal) stdio.terminal?.onResize((size) => c.send({ t: 'resize', ...size }));
    await runPoststartHooks(this.id, this.cfg, this.deps);
  }

  /** Signals the member's process (through the sandbox); before start, stops the member. */
  async kill(signal: string): Promise<void> {
    this.#life.need('kill', KILLABLE, `container ${this.id} is not running`);
    if (this.status === 'created') void this.#stop({ code: null, signal });
    else this.#relay!.send({ t: 'signal', signal });
  }

  /** Host pids that stand for the member's processes: this process and every exec relay. */
  pids(): number[] {
    return [process.pid, ...this.#execs];
  }

  /** Forwards an exec to the sandbox, joining this member's process, and relays it back to the connection. */
  async exec(
    req: ExecControlRequest,
    reply: (r: ControlReply) => void,
    end: () => void,
  ): Promise<ExecSession> {
    this.#life.need('exec', ['running']);
    const c = await this.#connectSandbox();
    let done = false;
    const finish = () => {
      if (done) return;
      done = true;
      this.#execs.delete(req.pid);
      end();
    };
    // A quick process's output and exit can come in the same read as the sandbox's answer to the exec: they
    // are held until this exec is answered, or the caller would see the exit (and the end) before its `ok`.
    let answered = false;
    const held: ControlReply[] = [];
    const forward = (ev: ControlReply) => {
      reply(ev);
      if (ev.t === 'exit') finish();
    };
    c.onEvent = (ev) => (answered ? forward(ev) : held.push(ev));
    const lost: ControlReply = { t: 'exit', code: null, signal: 'SIGKILL' };
    c.onClose = () => {
      if (!answered) return; // the request below fails, or the exec is answered first
      if (!done) reply(lost);
      finish();
    };
    const r = await c.request({
      t: 'exec',
      pid: req.pid,
      process: req.process,
      container: containerExecOf(this.id, this.cfg, this.guestMounts, this.#guestPid),
      ...(req.terminal ? { terminal: req.terminal } : {}),
    });
    this.#execs.add(req.pid);
    reply({ t: 'ok', result: r });
    answered = true;
    for (const ev of held.splice(0)) forward(ev);
    if (c.closed && !done) forward(lost);
    const stdin = c.stdin();
    return {
      write: async (d) => stdin.write(d),
      end: async () => stdin.end(),
      kill: async (signal) => c.send({ t: 'signal', signal }),
      resize: async (size) => c.send({ t: 'resize', ...size }),
      abandon: () => c.close(),
    };
  }

  #connectSandbox(): Promise<ControlClient> {
    return ControlClient.connect(
      controlSocketPath(this.deps.paths.runDir, this.deps.store.root, this.sandboxId),
      this.sandboxId,
    );
  }

  async #stop(st: ExitStatus): Promise<void> {
    if (!this.#life.stop()) return;
    this.#relay?.close();
    // Its binds stay in the share until the VM goes (the sandbox's stop unmounts them all). The guest's 9p
    // client keeps one dentry per directory inode, so a directory bound for two containers (one host rootfs,
    // a volume shared in a pod) is one dentry; removing this container's bind would pull it from under the other.
    await this.#life.recordStopped(st);
    await this.#server?.close();
    this.#server = null;
    this.#resolveStopped(st);
  }
}
