import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { messageOf, VmcError } from '../errors.js';
import { selectFactory } from '../factory/select.js';
import type { VmSpec } from '../hypervisor/types.js';
import type { ContainerConfig } from '../oci/bundle.js';
import type { PhaseRecorder } from '../platform/phases.js';
import { ended, relayStdin } from '../platform/streams.js';
import { UndoStack } from '../platform/undo-stack.js';
import type { AgentProcess, ExitStatus } from '../protocol/agent/client.js';
import { requestFigures } from '../protocol/agent/figures.js';
import { type CgroupStats, type ContainerExec, cgroupStatsError } from '../protocol/agent/messages.js';
import type { ControlReply, ResourceUpdate } from '../protocol/control/messages.js';
import type { ControlServer, ExecSession } from '../protocol/control/server.js';
import { currentShape, grow } from '../vm/resize.js';
import type { Vm } from '../vm/vm.js';
import { type CgroupLimitFiles, cgroupUpdate } from './cgroup-update.js';
import { type ControlledShim, type ExecControlRequest, serveControl } from './control-handler.js';
import { relayExec } from './exec-session.js';
import { runCreateHooks, runPoststartHooks } from './hooks.js';
import { KILLABLE, LIVE, ShimLifecycle, type ShimStatus } from './lifecycle.js';
import { type MountPlan, planMounts } from './mounts.js';
import { namespacesToShare } from './namespaces.js';
import {
  checkPodNetns,
  connectPodNetwork,
  disconnectPodNetwork,
  type PodNetwork,
  releaseUnusedSpareNic,
} from './network.js';
import { containerExecOf, execProcessOf, startError, terminalOf } from './process.js';
import { cgroupLimits, sizeForContainer } from './resources.js';
import { shareInto } from './share.js';
import type { SandboxDeps, Stdio } from './shim-interface.js';

/**
 * A sandbox: a container with a VM of its own, served by the host-side process that stands for it (the
 * "shim": `create` leaves it running as a descendant of the caller; `run` is one). It owns the VM and the only
 * agent connection, holds the container's stdio, serves the control socket (for its pod's members too), and
 * records every transition in the state store (see ShimLifecycle). A kill before start stops it.
 */
export class SandboxShim implements ControlledShim {
  readonly #life: ShimLifecycle;
  readonly #execs = new Set<number>();
  /** What connects the pod's network namespace to the VM (removed when the container stops). */
  #network: PodNetwork | null = null;
  /** Guest pids of the pod's member containers' processes (they may be joined by `exec`). */
  readonly #members = new Set<number>();
  /** Memory hot-plugs for members, one at a time (members of a pod may start at once). */
  #growth: Promise<unknown> = Promise.resolve();
  /** The limit files of each container's guest cgroup (this one's, its members'), as last written. */
  readonly #limits = new Map<string, CgroupLimitFiles>();
  #proc: AgentProcess | null = null;
  #server: ControlServer | null = null;
  /** Where create, start and stop lap their phases (a caller's breakdown, e.g. `vmcache run`'s), if anyone asked. */
  #trace: PhaseRecorder | undefined;
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
    this.#life = new ShimLifecycle(id, deps);
    this.#limits.set(id, cgroupLimits(cfg.resources) ?? {});
    this.stopped = new Promise((r) => {
      this.#resolveStopped = r;
    });
  }

  /** The container's state (changed only by its operations). */
  get status(): ShimStatus {
    return this.#life.status;
  }

  /**
   * Creates the container recorded (as `creating`) under `id`: reads its bundle, takes a VM from the factory
   * the configuration selects, bind-mounts the rootfs (and bind-mount sources) into the VM's share, listens
   * on the control socket and records `created` with this process as the container's pid. Undone on failure.
   * `trace`: create, the container's start and its stop lap their phases there (getVM's among them).
   */
  static async create(
    id: string,
    cfg: ContainerConfig,
    spec: VmSpec,
    deps: SandboxDeps,
    opts: { useCache: boolean; signal?: AbortSignal; trace?: PhaseRecorder },
  ): Promise<SandboxShim> {
    const rec = opts.trace;
    const plan = planMounts(cfg.mounts, id, cfg.shmSize, existsSync, join(cfg.bundle, 'config.json'));
    for (const s of plan.skipped) deps.logger.debug({ id, ...s }, 'mount skipped');
    namespacesToShare(cfg, null); // a sandbox joins no host namespace but the network's
    if (cfg.netns) checkPodNetns(cfg.netns);
    const undo = new UndoStack();
    try {
      const { factory } = await selectFactory(deps.config, spec, deps, opts.useCache);
      rec?.lap('create: plan mounts, connect to the factory');
      const got = await factory
        .getVM(sizeForContainer(spec, cfg.resources), opts.signal, { trace: rec })
        .finally(() => factory.close());
      rec?.lap('create: close the factory client');
      const vm = got.vm;
      // Destroying the VM also unmounts everything under its state directory (the binds below).
      undo.push('destroy VM', () => vm.destroy());
      // Its laps (`pod network: ...`) cover the time it takes.
      const network = cfg.netns ? await connectPodNetwork(vm, cfg.netns, deps.run, undo, rec) : null;
      if (!network) await releaseUnusedSpareNic(vm);
      await shareInto(vm.record.files.sharedDir, cfg.rootfs, `${id}/rootfs`, deps);
      for (const b of plan.host) await shareInto(vm.record.files.sharedDir, b.source, b.shareRel, deps);
      rec?.lap('create: bind the rootfs and volumes into the share');
      await runCreateHooks(id, cfg, deps);
      const shim = new SandboxShim(id, cfg, vm, plan, deps);
      shim.#trace = rec;
      shim.#network = network;
      shim.#server = await serveControl(shim, deps);
      undo.push('close control socket', () => shim.#closeServer());
      await shim.#life.created(vm.id);
      rec?.lap('create: hooks, control socket, record created');
      deps.logger.debug({ id, vmId: vm.id, ms: Math.round(got.timings.totalMs) }, 'container created');
      undo.release();
      return shim;
    } catch (err) {
      await undo.unwind();
      throw err;
    }
  }

  /** Starts the container's process with `stdio` attached. Only valid when created. */
  async start(stdio: Stdio): Promise<void> {
    this.#life.need('start', ['created']);
    const t0 = this.deps.clock.monotonic();
    let proc: AgentProcess;
    try {
      const { additionalGids: _groups, ...p } = execProcessOf(this.cfg);
      const terminal = terminalOf(this.cfg, stdio);
      proc = await this.vm.exec({
        ...p,
        stdin: true,
        container: this.#containerExec(),
        ...(terminal ? { terminal } : {}),
      });
    } catch (err) {
      throw startError(this.id, err);
    }
    const rec = this.#trace;
    if (rec) {
      const phase = 'start: exec of the container process';
      rec.lap(phase);
      if (proc.startTrace) requestFigures(rec, phase, proc.startTrace);
    }
    this.deps.logger.debug(
      { id: this.id, ms: Math.round(this.deps.clock.monotonic() - t0) },
      'process started',
    );
    this.#proc = proc;
    await this.#life.transition('start', ['created'], 'running');
    rec?.lap('start: record running');
    proc.stdout.pipe(stdio.stdout, { end: false });
    proc.stderr.pipe(stdio.stderr, { end: false });
    relayStdin(stdio.stdin, proc);
    if (this.cfg.process.terminal)
      stdio.terminal?.onResize((size) => void proc.resize(size).catch(() => undefined));
    await runPoststartHooks(this.id, this.cfg, this.deps);
    rec?.lap('start: stdio relay, poststart hooks');
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
    this.#life.need('kill', KILLABLE, `container ${this.id} is not running`);
    if (this.status === 'created') {
      void this.#stop({ code: null, signal });
      return;
    }
    if (this.status === 'paused') await this.resume();
    await this.#proc!.kill(signal);
  }

  /** Freezes the VM (QMP stop). */
  async pause(): Promise<void> {
    this.#life.need('pause', ['running']);
    await this.vm.pause();
    await this.#life.transition('pause', ['running'], 'paused');
  }

  /** Thaws the VM. */
  async resume(): Promise<void> {
    this.#life.need('resume', ['paused']);
    await this.vm.resume();
    await this.#life.transition('resume', ['paused'], 'running');
  }

  /** Host pids that stand for the container's processes: this process and every exec relay. */
  pids(): number[] {
    return [process.pid, ...this.#execs];
  }

  /** Signals every process of this container or of a member of its pod, through its guest cgroup. */
  async signalAll(name: string, signal: string): Promise<unknown> {
    this.#needInPod(name, 'signal-all');
    return this.vm.agent.request({ op: 'signal-cgroup', name, signal });
  }

  /**
   * New limits for the guest cgroup of this container or a member (`update`): a higher memory limit grows the
   * VM first (hot-plug), then the files are written. Only while it runs (before start there is no cgroup).
   */
  async update(name: string, r: ResourceUpdate): Promise<void> {
    this.#needInPod(name, 'update');
    this.#life.need('update', ['running', 'paused'], `container ${this.id} is not running`);
    const { files, next, growBytes } = cgroupUpdate(this.#limits.get(name) ?? {}, r);
    await this.#growBy(growBytes);
    await this.vm.agent.request({ op: 'update-cgroup', name, limits: files });
    this.#limits.set(name, next);
  }

  /** The usage and limits of the guest cgroup of this container or a member (`events`). */
  async stats(name: string): Promise<CgroupStats> {
    this.#needInPod(name, 'stats');
    this.#life.need('stats', ['running', 'paused'], `container ${this.id} is not running`);
    const stats = await this.vm.agent.request({ op: 'cgroup-stats', name });
    const bad = cgroupStatsError(stats);
    if (bad)
      throw new VmcError('VMC_ERR_AGENT_PROTOCOL', `VM ${this.vm.id}: the agent's stats of ${name}: ${bad}`);
    return stats as CgroupStats;
  }

  /** `name` is this container or a member of its pod, and the VM is still there. */
  #needInPod(name: string, what: string): void {
    if (name !== this.id && this.deps.store.read(name).sandboxId !== this.id)
      throw new VmcError('VMC_ERR_INVALID_STATE', `container ${name} is not in sandbox ${this.id}`);
    this.#life.need(what, LIVE, `sandbox ${this.id} is stopped`);
  }

  /**
   * Runs a process for a connection: in this container (no `req.container`), joining a member's process, or
   * as a new member of the pod (with a root of its own and the namespaces of this container it shares).
   */
  async exec(
    req: ExecControlRequest,
    reply: (r: ControlReply) => void,
    end: () => void,
  ): Promise<ExecSession> {
    this.#life.need('exec', ['running']);
    const own = this.#proc!;
    const p = req.process;
    const container = req.container ?? {
      ...this.#containerExec(own.pid),
      additionalGids: p.additionalGids,
    };
    // A pod member joins only processes this sandbox started; a new member needs a root of its own.
    if (container.join !== undefined && container.join !== own.pid && !this.#members.has(container.join))
      throw new VmcError(
        'VMC_ERR_INVALID_STATE',
        `no container process ${container.join} in sandbox ${this.id}`,
      );
    const member = container.join === undefined;
    if (member && container.root.split('/')[0] === this.id)
      throw new VmcError('VMC_ERR_INVALID_STATE', `a member of sandbox ${this.id} needs a root of its own`);
    if (member && req.shareSandbox?.length)
      container.shareNamespaces = { pid: own.pid, kinds: req.shareSandbox };
    let proc: AgentProcess;
    try {
      if (member) await this.#growForMember(container);
      const { args, env, cwd, uid, gid } = p;
      const terminal = req.terminal ? { terminal: req.terminal } : {};
      proc = await this.vm.exec({ args, env, cwd, uid, gid, stdin: true, container, ...terminal });
    } catch (err) {
      throw startError(this.id, err);
    }
    if (member) {
      this.#members.add(proc.pid);
      const name = container.cgroup?.name;
      if (name) this.#limits.set(name, { ...container.cgroup?.limits });
    }
    this.#execs.add(req.pid);
    reply({ t: 'ok', result: { guestPid: proc.pid } });
    return relayExec(proc, reply, end, this.stopped, () => {
      if (member) this.#members.delete(proc.pid);
      this.#execs.delete(req.pid);
    });
  }

  /**
   * A member's memory limit is added to the VM by memory hot-plug before it starts, as Kata grows a pod's VM
   * for each container (the VM never shrinks while the pod lives). vCPUs are not added: see resources.ts.
   */
  #growForMember(container: ContainerExec): Promise<void> {
    return this.#growBy(Number(container.cgroup?.limits?.['memory.max'] ?? 0));
  }

  /** Hot-plugs `bytes` more memory into the VM (rounded up to MiB), one growth after another. */
  #growBy(bytes: number): Promise<void> {
    if (!(bytes > 0)) return Promise.resolve();
    const grown = this.#growth.then(() => {
      const now = currentShape(this.vm);
      return grow(this.vm, { cpus: now.cpus, memoryMiB: now.memoryMiB + Math.ceil(bytes / 2 ** 20) });
    });
    this.#growth = grown.catch(() => {});
    return grown.then(() => {});
  }

  #containerExec(join?: number): ContainerExec {
    return containerExecOf(this.id, this.cfg, this.plan.guest, join);
  }

  /** Once: records the exit, destroys the VM (and with it the share's mounts), closes the control socket. */
  async #stop(st: ExitStatus): Promise<void> {
    if (!this.#life.stop()) return;
    const rec = this.#trace;
    rec?.lap(this.#proc ? 'run: the process runs, its exit and output arrive' : 'stopped before start');
    const t0 = this.deps.clock.monotonic();
    // Members still running go with the VM: what they wrote must reach the host first.
    await this.vm.flushShared();
    rec?.lap('stop: flush the share');
    await this.vm
      .destroy()
      .catch((e: unknown) => this.deps.logger.error({ err: messageOf(e) }, 'VM destroy'));
    rec?.lap('stop: destroy the VM');
    this.deps.logger.debug({ id: this.id, ms: Math.round(this.deps.clock.monotonic() - t0) }, 'VM destroyed');
    if (this.#network)
      await disconnectPodNetwork(this.#network, this.deps.run).catch((e: unknown) =>
        this.deps.logger.error({ err: messageOf(e) }, 'removing the pod network plumbing'),
      );
    await this.#life.recordStopped(st);
    await this.#closeServer();
    rec?.lap('stop: record stopped, close the control socket');
    this.#resolveStopped(st);
  }

  async #closeServer(): Promise<void> {
    const s = this.#server;
    this.#server = null;
    await s?.close();
  }
}
