import { VmcError } from '../errors.js';
import type { ResourceUpdate } from '../oci/resource-update.js';
import { type Clock, waitAtMost } from '../platform/clock.js';
import type { Logger } from '../platform/logger.js';
import { signalExitCode } from '../platform/signals.js';
import type { CgroupStats } from '../protocol/agent/messages.js';
import type { ControlledShim } from '../sandbox/control-handler.js';
import type { ExecTask } from './exec-task.js';
import { OomWatch } from './oom-watch.js';
import { exitStatusOf, ProcessExit, startFailureStatus, type TaskExit } from './process-state.js';
import type { IoPaths, TaskIo } from './task-io.js';
import type { TaskTerminal } from './task-terminal.js';

/** How long a failed start waits for the container's stop (its VM's destruction) before it answers. */
const STOP_AFTER_FAILED_START_MS = 10_000;

/** Liveness ticks a container (or its sandbox) being stopped has to end the task once its VM is gone. */
const STOPPING_GRACE_TICKS = 5;

/** A container as a backend made it: its shim (SandboxShim or MemberShim) and how to tell its VM lives. */
export interface ContainerHandle {
  readonly shim: ControlledShim;
  /** Whether the VM the container runs in is still there; undefined for a pod member (its sandbox knows). */
  vmAlive?(): boolean;
}

/** What a container task needs besides its handle. */
export interface ContainerTaskDeps {
  clock: Clock;
  logger: Logger;
  /** How often a running task's VM is checked while someone may wait on it, and its cgroup for OOM (ms). */
  livenessMs: number;
  /** The kernel killed for memory in the task's guest cgroup (the `/tasks/oom` event). */
  onOom(): void;
}

/** The status State reports (containerd.v1.types.Status names). */
export type TaskStatus = 'created' | 'running' | 'paused' | 'stopped';

/**
 * One task of the daemon: a container (the pod's sandbox, or a member in the sandbox's VM), its stdio, the
 * execs added to it, and its end. The end is settled by the first of: the shim's `stopped` (the process
 * exited, or a kill before start stopped it), and the liveness check (the VM died under it: the exit is
 * 128 + SIGKILL, the reason logged), so a Wait never outlives the VM.
 */
export class ContainerTask {
  readonly end = new ProcessExit();
  readonly execs = new Map<string, ExecTask>();
  #stopWatch: () => void = () => {};
  /** The exit status of a failed start, which the stop that follows it reports instead of its kill's. */
  #startFailure: number | null = null;

  constructor(
    readonly id: string,
    readonly bundle: string,
    readonly handle: ContainerHandle,
    readonly io: TaskIo,
    /** The FIFO paths `io` is on, as State reports them. */
    readonly paths: IoPaths,
    /** The size of the guest pty of a `terminal: true` task (ResizePty sets it), or null. */
    readonly terminal: TaskTerminal | null,
    /** The pod's sandbox task when this is a member; its VM is this task's. */
    readonly sandbox: ContainerTask | null,
    private readonly deps: ContainerTaskDeps,
  ) {
    void handle.shim.stopped.then((st) => this.#finish(this.#startFailure ?? exitStatusOf(st)));
  }

  /** The shim of this container. */
  get shim(): ControlledShim {
    return this.handle.shim;
  }

  /** The shim that owns the VM: the sandbox's for a pod member (signal-all, update and stats go to it). */
  get owner(): ControlledShim {
    return this.sandbox?.shim ?? this.shim;
  }

  /** The usage and limits of this container's guest cgroup (read in the guest by the VM's owner). */
  stats(): Promise<CgroupStats> {
    const owner = this.owner;
    if (!owner.stats) throw new VmcError('VMC_ERR_SHIM_UNSUPPORTED', `task ${this.id}: no stats here`);
    return owner.stats(this.id);
  }

  /** New limits for this container's guest cgroup (a higher memory limit grows the VM first). */
  update(r: ResourceUpdate): Promise<void> {
    const owner = this.owner;
    if (!owner.update) throw new VmcError('VMC_ERR_SHIM_UNSUPPORTED', `task ${this.id}: no update here`);
    return owner.update(this.id, r);
  }

  /**
   * The status State reports: `stopped` only once the exit is recorded (a stop under way, VM being
   * destroyed, still reads `running`), so that containerd's Delete, which follows a stopped State, finds it.
   */
  get status(): TaskStatus {
    if (this.end.exit) return 'stopped';
    const s = this.shim.status;
    if (s === 'stopped') return 'running';
    return s === 'creating' ? 'created' : s;
  }

  /** Whether the container's stop is under way (its exit not yet recorded). */
  get stopping(): boolean {
    return !this.end.exit && this.shim.status === 'stopped';
  }

  /** The exit once ended. */
  get exit(): TaskExit | null {
    return this.end.exit;
  }

  /**
   * Starts the container's process on the task's stdio, and the liveness check. A start that fails (a
   * program that is not there) stops the container, its VM with it, and ends the task with
   * `startFailureStatus` before the error is returned: containerd's client deletes only a stopped task, so a
   * task left `created` would outlive `ctr run --rm` and its container.
   */
  async start(): Promise<void> {
    try {
      const { stdin, stdout, stderr } = this.io;
      await this.shim.start({ stdin, stdout, stderr, ...(this.terminal ? { terminal: this.terminal } : {}) });
    } catch (err) {
      this.#startFailure = startFailureStatus(err);
      await this.shim.kill('SIGKILL').catch(() => undefined);
      await waitAtMost(this.shim.stopped, STOP_AFTER_FAILED_START_MS, this.deps.clock);
      this.#finish(this.#startFailure);
      throw err;
    }
    this.#watch();
    if (this.owner.stats) {
      const oom = new OomWatch({
        oomKills: async () => (await this.stats()).memory.events.oom_kill ?? 0,
        active: () => this.shim.status === 'running',
        onOom: () => this.deps.onOom(),
        clock: this.deps.clock,
        everyMs: this.deps.livenessMs,
      });
      oom.start();
      void this.end.exited.then(() => oom.stop());
    }
  }

  /** Whether the VM holding this container is there (the sandbox's for a member). */
  vmAlive(): boolean {
    const owner = this.handle.vmAlive ? this.handle : this.sandbox?.handle;
    return owner?.vmAlive ? owner.vmAlive() : true;
  }

  /** Stops the liveness check (the task is being deleted). */
  dispose(): void {
    this.#stopWatch();
  }

  #watch(): void {
    // Ticks a stop under way may take to end the task itself once its VM is gone (the shim destroys the VM
    // first, then records the exit): past them the task ends as if the VM had died.
    let grace = STOPPING_GRACE_TICKS;
    const tick = () => {
      if (this.end.exit) return;
      if (!this.vmAlive()) {
        // The container's own stop, or its sandbox's (a pod being stopped), destroyed the VM: not a fault.
        const stopping = this.shim.status === 'stopped' || this.owner.status === 'stopped';
        if (stopping && grace-- > 0) {
          this.#stopWatch = this.deps.clock.setTimeout(tick, this.deps.livenessMs);
          return;
        }
        const log = stopping ? this.deps.logger.info : this.deps.logger.error;
        log.call(
          this.deps.logger,
          { id: this.id },
          stopping
            ? 'the VM of the task was stopped before its exit came: the task exits with 128+SIGKILL'
            : 'the VM of the task is gone (QEMU exited or was killed): the task exits with 128+SIGKILL',
        );
        this.#finish(signalExitCode('SIGKILL'));
        return;
      }
      this.#stopWatch = this.deps.clock.setTimeout(tick, this.deps.livenessMs);
    };
    this.#stopWatch = this.deps.clock.setTimeout(tick, this.deps.livenessMs);
  }

  #finish(status: number): void {
    if (!this.end.settle(status, this.deps.clock.now())) return;
    this.#stopWatch();
    this.io.close();
    // The container's execs went with its process (its VM, or its namespaces in the VM).
    for (const e of this.execs.values()) e.abandon(signalExitCode('SIGKILL'));
  }
}
