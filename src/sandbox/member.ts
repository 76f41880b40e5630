import { existsSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { isVmcError, messageOf, VmcError } from '../errors.js';
import type { ContainerConfig } from '../oci/bundle.js';
import { unmountAllUnder } from '../platform/mounts.js';
import { vmDir } from '../platform/paths.js';
import { identify } from '../platform/process.js';
import { UndoStack } from '../platform/undo-stack.js';
import type { ExitStatus } from '../protocol/agent/client.js';
import type { ContainerMount } from '../protocol/agent/messages.js';
import { runCreateHooks, type SandboxDeps, shareInto } from './container.js';
import {
  ControlClient,
  type ControlReply,
  ControlServer,
  controlSocketPath,
  type ExecSession,
  type HandledRequest,
} from './control.js';
import { hookState, runHooksWarning } from './hooks.js';
import { planMounts } from './mounts.js';
import { namespacesToShare, type SharedNamespace } from './namespaces.js';
import { containerExecOf, execProcessOf } from './process.js';
import type { Shim, Stdio } from './shim-interface.js';
import { effectiveStatus } from './state-store.js';

/**
 * A pod member: a container whose bundle names a sandbox (CRI container-type `container`). It runs in the
 * sandbox's VM, as Kata runs a pod: its rootfs (and bind sources) are bind-mounted into that VM's share under
 * its own id, and its process, with mount/UTS/IPC namespaces and a root of its own, is started through the
 * sandbox's host-side process (the only holder of the VM's agent connection), which relays its stdio back.
 * When the sandbox stops, its VM goes, and so do its members. `pause` is the sandbox's (it freezes the VM).
 */
export class MemberShim implements Shim {
  status: 'created' | 'running' | 'stopped' = 'created';
  readonly stopped: Promise<ExitStatus>;
  #resolveStopped!: (s: ExitStatus) => void;
  #relay: ControlClient | null = null;
  #guestPid = 0;
  #server: ControlServer | null = null;
  readonly #execs = new Set<number>();

  private constructor(
    readonly id: string,
    readonly cfg: ContainerConfig,
    private readonly sandboxId: string,
    private readonly guestMounts: ContainerMount[],
    private readonly deps: SandboxDeps,
    /** The sandbox's namespaces this member shares (CRI's namespace paths: IPC, UTS). */
    private readonly share: SharedNamespace[] = [],
  ) {
    this.stopped = new Promise((r) => {
      this.#resolveStopped = r;
    });
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
      m.#server = await ControlServer.listen(
        controlSocketPath(deps.paths.runDir, deps.store.root, id),
        (req, reply, end) => m.#handle(req, reply, end),
      );
      undo.push('close control socket', () => m.#server?.close());
      await deps.store.update(id, (s) => {
        s.status = 'created';
        s.vmId = sandbox.vmId;
        s.shim = identify(process.pid);
      });
      undo.release();
      return m;
    } catch (err) {
      await undo.unwind();
      throw err;
    }
  }

  async start(stdio: Stdio): Promise<void> {
    if (this.status !== 'created')
      throw new VmcError(
        'VMC_ERR_INVALID_STATE',
        `container ${this.id} is ${this.status}, start needs created`,
      );
    const _p = this.cfg.process;
    const c = await this.#connectSandbox();
    c.onEvent = (ev) => {
      if (ev.t === 'out') (ev.fd === 1 ? stdio.stdout : stdio.stderr).write(Buffer.from(ev.data, 'base64'));
      else if (ev.t === 'exit') void this.#stop({ code: ev.code, signal: ev.signal });
    };
    c.onClose = () => void this.#stop({ code: null, signal: 'SIGKILL' }); // the sandbox (and its VM) went away
    const r = await c.request<{ guestPid: number }>({
      t: 'exec',
      pid: process.pid,
      process: execProcessOf(this.cfg),
      container: containerExecOf(this.id, this.cfg, this.guestMounts),
      ...(this.share.length ? { shareSandbox: this.share } : {}),
    });
    this.#relay = c;
    this.#guestPid = r.guestPid;
    this.status = 'running';
    await this.deps.store.update(this.id, (s) => {
      s.status = 'running';
    });
    stdio.stdin.on('data', (d: Buffer) => c.send({ t: 'stdin', data: d.toString('base64') }));
    stdio.stdin.on('end', () => c.send({ t: 'close-stdin' }));
    stdio.stdin.on('error', () => c.send({ t: 'close-stdin' }));
    await runHooksWarning(
      'poststart',
      this.cfg,
      hookState(this.id, this.cfg, 'running', process.pid),
      this.deps,
    );
  }

  async kill(signal: string): Promise<void> {
    if (this.status === 'stopped')
      throw new VmcError('VMC_ERR_INVALID_STATE', `container ${this.id} is not running`);
    if (this.status === 'created') void this.#stop({ code: null, signal });
    else this.#relay!.send({ t: 'signal', signal });
  }

  #connectSandbox(): Promise<ControlClient> {
    return ControlClient.connect(
      controlSocketPath(this.deps.paths.runDir, this.deps.store.root, this.sandboxId),
      this.sandboxId,
    );
  }

  async #stop(st: ExitStatus): Promise<void> {
    if (this.status === 'stopped') return;
    this.status = 'stopped';
    this.#relay?.close();
    // Its binds stay in the share until the VM goes (the sandbox's stop unmounts them all). The guest's 9p
    // client keeps one dentry per directory inode, so a directory bound for two containers (one host rootfs,
    // a volume shared in a pod) is one dentry; removing this container's bind would pull it from under the other.
    await this.deps.store
      .update(this.id, (s) => {
        s.status = 'stopped';
        s.exit = st;
      })
      .catch((e: unknown) => this.deps.logger.error({ err: messageOf(e) }, 'recording the exit'));
    await this.#server?.close();
    this.#server = null;
    this.#resolveStopped(st);
  }

  async #handle(
    req: HandledRequest,
    reply: (r: ControlReply) => void,
    end: () => void,
  ): Promise<ExecSession | 'replied' | undefined> {
    switch (req.t) {
      case 'start':
        await this.start({ stdin: process.stdin, stdout: process.stdout, stderr: process.stderr });
        return;
      case 'kill':
        await this.kill(req.signal);
        return;
      case 'signal-all':
        throw new VmcError(
          'VMC_ERR_INVALID_STATE',
          `container ${this.id} does not hold a VM: ask its sandbox ${this.sandboxId}`,
        );
      case 'pause':
      case 'resume':
        throw new VmcError(
          'VMC_ERR_OCI_UNSUPPORTED',
          `container ${this.id} shares the VM of sandbox ${this.sandboxId}: ${req.t} the sandbox instead`,
        );
      case 'ps':
        reply({ t: 'ok', result: { pids: [process.pid, ...this.#execs] } });
        return 'replied';
      case 'exec': {
        if (this.status !== 'running')
          throw new VmcError(
            'VMC_ERR_INVALID_STATE',
            `container ${this.id} is ${this.status}, exec needs running`,
          );
        // Forwarded to the sandbox, joining this member's process.
        const c = await this.#connectSandbox();
        let done = false;
        const finish = () => {
          if (done) return;
          done = true;
          this.#execs.delete(req.pid);
          end();
        };
        c.onEvent = (ev) => {
          reply(ev);
          if (ev.t === 'exit') finish();
        };
        c.onClose = () => {
          if (!done) reply({ t: 'exit', code: null, signal: 'SIGKILL' });
          finish();
        };
        const r = await c.request({
          t: 'exec',
          pid: req.pid,
          process: req.process,
          container: containerExecOf(this.id, this.cfg, this.guestMounts, this.#guestPid),
        });
        this.#execs.add(req.pid);
        reply({ t: 'ok', result: r });
        return {
          write: async (d) => c.send({ t: 'stdin', data: d.toString('base64') }),
          end: async () => c.send({ t: 'close-stdin' }),
          kill: async (signal) => c.send({ t: 'signal', signal }),
          abandon: () => c.close(),
        };
      }
    }
  }
}

/** Unmounts and removes a member's directory in the sandbox VM's share (never deleting through a mount). */
async function unshare(dir: string, deps: SandboxDeps): Promise<void> {
  if (!existsSync(dir)) return;
  const left = await unmountAllUnder(deps.run, dir);
  if (left.length === 0) rmSync(dir, { recursive: true, force: true });
  else deps.logger.error({ dir, mounts: left }, 'member share still has mounts; left in place');
}
