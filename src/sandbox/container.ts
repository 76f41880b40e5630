import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { RuntimeConfig } from '../config/config.js';
import { messageOf, VmcError } from '../errors.js';
import { selectFactory } from '../factory/select.js';
import type { VmSpec } from '../hypervisor/types.js';
import type { ContainerConfig } from '../oci/bundle.js';
import { bindBeneath } from '../platform/mounts.js';
import { identify } from '../platform/process.js';
import { ended } from '../platform/streams.js';
import { UndoStack } from '../platform/undo-stack.js';
import type { AgentProcess, ExitStatus } from '../protocol/agent/client.js';
import type { ContainerExec } from '../protocol/agent/messages.js';
import { currentShape, grow } from '../vm/resize.js';
import type { Vm, VmDeps } from '../vm/vm.js';
import {
  type ControlReply,
  ControlServer,
  controlSocketPath,
  type ExecSession,
  type HandledRequest,
} from './control.js';
import { hookState, runHooks, runHooksWarning } from './hooks.js';
import { type MountPlan, planMounts } from './mounts.js';
import { namespacesToShare } from './namespaces.js';
import { checkPodNetns, connectPodNetwork, disconnectPodNetwork, type PodNetwork } from './network.js';
import { containerExecOf, execProcessOf } from './process.js';
import { sizeForContainer } from './resources.js';
import type { Shim, Stdio } from './shim-interface.js';
import type { StateStore } from './state-store.js';

/** What the container layer needs besides the VM dependencies. */
export interface SandboxDeps extends VmDeps {
  config: RuntimeConfig;
  store: StateStore;
}

/** Refuses what a bundle may ask for but vmcache cannot do, naming the JSON path. */
export function checkSupported(cfg: ContainerConfig): void {
  if (cfg.process.terminal)
    throw new VmcError(
      'VMC_ERR_OCI_UNSUPPORTED',
      `${cfg.bundle}/config.json: process.terminal: true is not supported (no pty hand-over yet); set it to false`,
    );
}

/**
 * One container, served by the host-side process that stands for it (the "shim": `create` leaves it running
 * as a descendant of the caller; `run` is one). It owns the VM and the only agent connection, holds the
 * container's stdio, serves the control socket, and records every transition in the state store.
 * Life cycle: created → running ⇄ paused → stopped; a kill before start goes straight to stopped.
 */
export class ContainerShim implements Shim {
  status: 'created' | 'running' | 'paused' | 'stopped' = 'created';
  readonly #execs = new Set<number>();
  /** What connects the pod's network namespace to the VM (removed when the container stops). */
  #network: PodNetwork | null = null;
  /** Guest pids of the pod's member containers' processes (they may be joined by `exec`). */
  readonly #members = new Set<number>();
  /** Memory hot-plugs for members, one at a time (members of a pod may start at once). */
  #growth: Promise<unknown> = Promise.resolve();
  #proc: AgentProcess | null = null;
  #server: ControlServer | null = null;
  #resolveStopped!: (s: ExitStatus) => void;
  /** Resolves with the container process's exit status once it has stopped and the VM is gone. */
  readonly stopped: Promise<ExitStatus>;

  private constructor(
    readonly id: string,
    readonly cfg: ContainerConfig,
    readonly vm: Vm,
    private readonly plan: MountPlan,
    private readonly deps: SandboxDeps,
  ) {
    this.stopped = new Promise((r) => {
      this.#resolveStopped = r;
    });
  }

  /**
   * Creates the container recorded (as `creating`) under `id`: reads its bundle, takes a VM from the factory
   * the configuration selects, bind-mounts the rootfs (and bind-mount sources) into the VM's share, listens
   * on the control socket and records `created` with this process as the container's pid. Undone on failure.
   */
  static async create(
    id: string,
    cfg: ContainerConfig,
    spec: VmSpec,
    deps: SandboxDeps,
    opts: { useCache: boolean; signal?: AbortSignal },
  ): Promise<ContainerShim> {
    const plan = planMounts(cfg.mounts, id, cfg.shmSize, existsSync, join(cfg.bundle, 'config.json'));
    for (const s of plan.skipped) deps.logger.debug({ id, ...s }, 'mount skipped');
    namespacesToShare(cfg, null); // a sandbox joins no host namespace but the network's
    if (cfg.netns) checkPodNetns(cfg.netns);
    const undo = new UndoStack();
    try {
      const { factory } = await selectFactory(deps.config, spec, deps, opts.useCache);
      const got = await factory
        .getVM(sizeForContainer(spec, cfg.resources), opts.signal)
        .finally(() => factory.close());
      const vm = got.vm;
      // Destroying the VM also unmounts everything under its state directory (the binds below).
      undo.push('destroy VM', () => vm.destroy());
      const network = cfg.netns ? await connectPodNetwork(vm, cfg.netns, deps.run, undo) : null;
      await shareInto(vm.record.files.sharedDir, cfg.rootfs, `${id}/rootfs`, deps);
      for (const b of plan.host) await shareInto(vm.record.files.sharedDir, b.source, b.shareRel, deps);
      await runCreateHooks(id, cfg, deps);
      const shim = new ContainerShim(id, cfg, vm, plan, deps);
      shim.#network = network;
      await shim.#listen();
      undo.push('close control socket', () => shim.#closeServer());
      await deps.store.update(id, (s) => {
        s.status = 'created';
        s.vmId = vm.id;
        s.shim = identify(process.pid);
      });
      deps.logger.debug({ id, vmId: vm.id, ms: Math.round(got.timings.totalMs) }, 'container created');
      undo.release();
      return shim;
    } catch (err) {
      await undo.unwind();
      throw err;
    }
  }

  /**
   * A member's memory limit is added to the VM by memory hot-plug before it starts, as Kata grows a pod's VM
   * for each container (the VM never shrinks while the pod lives). vCPUs are not added: see resources.ts.
   */
  #growForMember(container: ContainerExec): Promise<void> {
    const bytes = Number(container.cgroup?.limits?.['memory.max'] ?? 0);
    if (!(bytes > 0)) return Promise.resolve();
    const grown = this.#growth.then(() => {
      const now = currentShape(this.vm);
      return grow(this.vm, { cpus: now.cpus, memoryMiB: now.memoryMiB + Math.ceil(bytes / 2 ** 20) });
    });
    this.#growth = grown.catch(() => {});
    return grown.then(() => {});
  }

  /** Starts the container's process with `stdio` attached. Only valid when created. */
  async start(stdio: Stdio): Promise<void> {
    if (this.status !== 'created')
      throw new VmcError(
        'VMC_ERR_INVALID_STATE',
        `container ${this.id} is ${this.status}, start needs created`,
      );
    const t0 = this.deps.clock.monotonic();
    let proc: AgentProcess;
    try {
      const { additionalGids: _groups, ...p } = execProcessOf(this.cfg);
      proc = await this.vm.exec({ ...p, stdin: true, container: this.#containerExec() });
    } catch (err) {
      throw startError(this.id, err);
    }
    this.deps.logger.debug(
      { id: this.id, ms: Math.round(this.deps.clock.monotonic() - t0) },
      'process started',
    );
    this.#proc = proc;
    this.status = 'running';
    await this.deps.store.update(this.id, (s) => {
      s.status = 'running';
    });
    relay(proc, stdio);
    await runHooksWarning(
      'poststart',
      this.cfg,
      hookState(this.id, this.cfg, 'running', process.pid),
      this.deps,
    );
    const outputDone = Promise.all([ended(proc.stdout), ended(proc.stderr)]);
    proc.wait().then(
      async (st) => {
        await outputDone;
        await this.#stop(st);
      },
      async (err: unknown) => {
        this.deps.logger.error({ id: this.id, err: messageOf(err) }, 'lost the container process (VM died?)');
        await this.#stop({ code: null, signal: 'SIGKILL' });
      },
    );
  }

  /** Delivers `signal` (a name) to the container's process; before start, a kill stops the container. */
  async kill(signal: string): Promise<void> {
    if (this.status === 'stopped')
      throw new VmcError('VMC_ERR_INVALID_STATE', `container ${this.id} is not running`);
    if (this.status === 'created') {
      void this.#stop({ code: null, signal });
      return;
    }
    if (this.status === 'paused') await this.resume();
    await this.#proc!.kill(signal);
  }

  /** Freezes the VM (QMP stop). */
  async pause(): Promise<void> {
    if (this.status !== 'running')
      throw new VmcError(
        'VMC_ERR_INVALID_STATE',
        `container ${this.id} is ${this.status}, pause needs running`,
      );
    await this.vm.pause();
    this.status = 'paused';
    await this.deps.store.update(this.id, (s) => {
      s.status = 'paused';
    });
  }

  /** Thaws the VM. */
  async resume(): Promise<void> {
    if (this.status !== 'paused')
      throw new VmcError(
        'VMC_ERR_INVALID_STATE',
        `container ${this.id} is ${this.status}, resume needs paused`,
      );
    await this.vm.resume();
    this.status = 'running';
    await this.deps.store.update(this.id, (s) => {
      s.status = 'running';
    });
  }

  /** Host pids that stand for the container's processes: this process and every exec relay. */
  pids(): number[] {
    return [process.pid, ...this.#execs];
  }

  #containerExec(join?: number): ContainerExec {
    return containerExecOf(this.id, this.cfg, this.plan.guest, join);
  }

  /** Once: records the exit, destroys the VM (and with it the share's mounts), closes the control socket. */
  async #stop(st: ExitStatus): Promise<void> {
    if (this.status === 'stopped') return;
    this.status = 'stopped';
    const t0 = this.deps.clock.monotonic();
    // Members still running go with the VM: what they wrote must reach the host first.
    await this.vm.flushShared();
    await this.vm
      .destroy()
      .catch((e: unknown) => this.deps.logger.error({ err: messageOf(e) }, 'VM destroy'));
    this.deps.logger.debug({ id: this.id, ms: Math.round(this.deps.clock.monotonic() - t0) }, 'VM destroyed');
    if (this.#network)
      await disconnectPodNetwork(this.#network, this.deps.run).catch((e: unknown) =>
        this.deps.logger.error({ err: messageOf(e) }, 'removing the pod network plumbing'),
      );
    await this.deps.store
      .update(this.id, (s) => {
        s.status = 'stopped';
        s.exit = st;
      })
      .catch((e: unknown) => this.deps.logger.error({ err: messageOf(e) }, 'recording the exit'));
    await this.#closeServer();
    this.#resolveStopped(st);
  }

  async #listen(): Promise<void> {
    this.#server = await ControlServer.listen(
      controlSocketPath(this.deps.paths.runDir, this.deps.store.root, this.id),
      (req, reply, end) => this.#handle(req, reply, end),
    );
  }

  async #closeServer(): Promise<void> {
    const s = this.#server;
    this.#server = null;
    await s?.close();
  }

  async #handle(
    req: HandledRequest,
    reply: (r: ControlReply) => void,
    end: () => void,
  ): Promise<ExecSession | 'replied' | undefined> {
    switch (req.t) {
      case 'start':
        // The shim's own stdio is the container's (inherited from the caller of `create`).
        await this.start({ stdin: process.stdin, stdout: process.stdout, stderr: process.stderr });
        break;
      case 'kill':
        await this.kill(req.signal);
        break;
      case 'pause':
        await this.pause();
        break;
      case 'resume':
        await this.resume();
        break;
      case 'ps':
        reply({ t: 'ok', result: { pids: this.pids() } });
        return 'replied';
      case 'signal-all': {
        if (req.name !== this.id && this.deps.store.read(req.name).sandboxId !== this.id)
          throw new VmcError('VMC_ERR_INVALID_STATE', `container ${req.name} is not in sandbox ${this.id}`);
        if (this.status === 'stopped')
          throw new VmcError('VMC_ERR_INVALID_STATE', `sandbox ${this.id} is stopped`);
        const r = await this.vm.agent.request({ op: 'signal-cgroup', name: req.name, signal: req.signal });
        reply({ t: 'ok', result: r });
        return 'replied';
      }
      case 'exec': {
        if (this.status !== 'running' || !this.#proc)
          throw new VmcError(
            'VMC_ERR_INVALID_STATE',
            `container ${this.id} is ${this.status}, exec needs running`,
          );
        const p = req.process;
        const container = req.container ?? {
          ...this.#containerExec(this.#proc.pid),
          additionalGids: p.additionalGids,
        };
        // A pod member joins only processes this sandbox started; a new member needs a root of its own.
        if (
          container.join !== undefined &&
          container.join !== this.#proc.pid &&
          !this.#members.has(container.join)
        )
          throw new VmcError(
            'VMC_ERR_INVALID_STATE',
            `no container process ${container.join} in sandbox ${this.id}`,
          );
        if (container.join === undefined && container.root.split('/')[0] === this.id)
          throw new VmcError(
            'VMC_ERR_INVALID_STATE',
            `a member of sandbox ${this.id} needs a root of its own`,
          );
        if (container.join === undefined && req.shareSandbox?.length)
          container.shareNamespaces = { pid: this.#proc.pid, kinds: req.shareSandbox };
        let proc: AgentProcess;
        try {
          if (container.join === undefined) await this.#growForMember(container);
          proc = await this.vm.exec({
            args: p.args,
            env: p.env,
            cwd: p.cwd,
            uid: p.uid,
            gid: p.gid,
            stdin: true,
            container,
          });
        } catch (err) {
          throw startError(this.id, err);
        }
        const member = container.join === undefined;
        if (member) this.#members.add(proc.pid);
        this.#execs.add(req.pid);
        reply({ t: 'ok', result: { guestPid: proc.pid } });
        proc.stdout.on('data', (d: Buffer) => reply({ t: 'out', fd: 1, data: d.toString('base64') }));
        proc.stderr.on('data', (d: Buffer) => reply({ t: 'out', fd: 2, data: d.toString('base64') }));
        const out = Promise.all([ended(proc.stdout), ended(proc.stderr)]);
        let finished = false;
        const finish = (st: ExitStatus) => {
          if (finished) return;
          finished = true;
          if (member) this.#members.delete(proc.pid);
          this.#execs.delete(req.pid);
          reply({ t: 'exit', ...st });
          end();
        };
        proc.wait().then(
          (st) => out.then(() => finish(st)),
          () => finish({ code: null, signal: 'SIGKILL' }),
        );
        void this.stopped.then(() => finish({ code: null, signal: 'SIGKILL' }));
        return {
          write: (d) => proc.write(d),
          end: () => proc.end(),
          kill: (sig) => proc.kill(sig),
          // The relay that stood for the process is gone: so is the process.
          abandon: () => {
            if (!finished) void proc.kill('SIGKILL').catch(() => undefined);
          },
        };
      }
    }
    return;
  }
}

/**
 * prestart, createRuntime and createContainer hooks, on the host, once the container's VM and root are ready
 * and before it is recorded created (see hooks.ts for why all three run there). A failure fails `create`.
 */
export async function runCreateHooks(id: string, cfg: ContainerConfig, deps: SandboxDeps): Promise<void> {
  const state = hookState(id, cfg, 'creating', process.pid);
  for (const kind of ['prestart', 'createRuntime', 'createContainer'] as const)
    await runHooks(kind, cfg, state, deps);
}

/**
 * Bind-mounts host `source` (file or directory) at `<sharedDir>/<rel>`, creating the mount point, and never
 * through a symlink: the guest can write the share (see bindBeneath).
 */
export async function shareInto(sharedDir: string, source: string, rel: string, deps: VmDeps): Promise<void> {
  await bindBeneath(deps.run, source, sharedDir, rel);
}

/** Copies the process's output to `stdio` and `stdio.stdin` to the process (EOF closes its stdin). */
function relay(proc: AgentProcess, stdio: Stdio): void {
  proc.stdout.pipe(stdio.stdout, { end: false });
  proc.stderr.pipe(stdio.stderr, { end: false });
  let chain = Promise.resolve();
  stdio.stdin.on('data', (c: Buffer) => {
    chain = chain.then(() => proc.write(c)).catch(() => undefined);
  });
  stdio.stdin.on('end', () => {
    chain = chain.then(() => proc.end()).catch(() => undefined);
  });
  stdio.stdin.on('error', () => {
    chain = chain.then(() => proc.end()).catch(() => undefined);
  });
}

/** The error of a container process that could not be started. */
export function startError(id: string, err: unknown): VmcError {
  return new VmcError('VMC_ERR_CONTAINER_START', `container ${id}: ${messageOf(err)}`, { cause: err });
}
