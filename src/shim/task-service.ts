import { messageOf, VmcError } from '../errors.js';
import { type Clock, waitAtMost } from '../platform/clock.js';
import type { Logger } from '../platform/logger.js';
import { parseSignal, signalExitCode } from '../platform/signals.js';
import type { TaskDefinition } from '../protocol/shim/generated/containerd/runtime/task/v2/shim.js';
import { Status } from '../protocol/shim/generated/containerd/types/task/task.js';
import type { CallContext, ServiceImplementation } from '../protocol/ttrpc/service.js';
import type { TaskBackend } from './backend.js';
import { ContainerTask, type TaskStatus } from './container-task.js';
import type { EventSink } from './events.js';
import { ExecTask } from './exec-task.js';
import { metricsOf } from './metrics.js';
import { execProcessOfSpec, resourceUpdateOfAny } from './oci-any.js';
import type { TaskExit } from './process-state.js';
import { absolutePath, execId, ioPath, signalNumber, taskId } from './request-checks.js';
import type { IoOpener, IoPaths } from './task-io.js';
import { ptySize, TaskTerminal } from './task-terminal.js';
import { timestampOf } from './timestamps.js';

/** What the Task service is built on. */
export interface TaskServiceDeps {
  backend: TaskBackend;
  openIo: IoOpener;
  events: EventSink;
  clock: Clock;
  logger: Logger;
  /** The pid the daemon reports for its tasks and itself (its own: it stands for the pod's processes). */
  pid: number;
  /** How often a running task's VM is checked for life (ms). */
  livenessMs?: number;
  /** How long Delete of a created task waits for the kill to stop it (ms). */
  stopWaitMs?: number;
  /** Called once Shutdown finds no task left: the daemon closes its socket and exits. */
  onShutdown(): void;
}

const STATUS: Record<TaskStatus, Status> = {
  created: Status.CREATED,
  running: Status.RUNNING,
  paused: Status.PAUSED,
  stopped: Status.STOPPED,
};

const notFound = (what: string) => new VmcError('VMC_ERR_SHIM_TASK_NOT_FOUND', `${what} not found`);

/**
 * containerd's Task service (`containerd.task.v2.Task`) for one daemon, which is one pod: the sandbox task
 * takes a VM from the cache, member tasks join it (see VmBackend). Every request is checked here, at the edge
 * (an id or path that is not one is InvalidArgument naming the field); an unknown task or exec is NotFound;
 * the status mapping is `taskStatusOf`. A `terminal: true` task or exec gets a pty in the guest (TaskTerminal:
 * its output is on the stdout FIFO, ResizePty sets its size). Checkpoint is not implemented (Unimplemented). Stats and Update reach the container's guest cgroup through the VM's owner:
 * Metrics in cgroup v2's shape (metrics.ts), a LinuxResources update as `vmcache update` applies it.
 */
export class TaskService {
  readonly #tasks = new Map<string, ContainerTask>();
  readonly #d: Required<TaskServiceDeps>;

  constructor(deps: TaskServiceDeps) {
    this.#d = { livenessMs: 2_000, stopWaitMs: 10_000, ...deps };
  }

  /** Tasks alive in this daemon (created and not deleted). */
  get taskCount(): number {
    return this.#tasks.size;
  }

  /** The ttrpc handlers, for `TtrpcServer.register(TaskDefinition, ...)`; each call is logged at debug. */
  handlers(): ServiceImplementation<typeof TaskDefinition> {
    const impl = this.#handlers();
    const log = this.#d.logger;
    for (const [name, fn] of Object.entries(impl) as Array<
      [string, (r: unknown, c: CallContext) => Promise<unknown>]
    >)
      (impl as Record<string, unknown>)[name] = async (
        r: { id?: string; execId?: string },
        ctx: CallContext,
      ) => {
        log.debug({ method: name, id: r.id, execId: r.execId || undefined }, 'task api');
        try {
          return await fn(r, ctx);
        } catch (err) {
          log.debug({ method: name, id: r.id, err: messageOf(err) }, 'task api failed');
          throw err;
        }
      };
    return impl;
  }

  #handlers(): ServiceImplementation<typeof TaskDefinition> {
    return {
      create: async (r) => {
        const id = taskId('CreateTaskRequest.id', r.id);
        const bundle = absolutePath('CreateTaskRequest.bundle', r.bundle);
        if (r.checkpoint)
          throw new VmcError('VMC_ERR_SHIM_UNSUPPORTED', 'CreateTaskRequest.checkpoint: no checkpoints');
        if (this.#tasks.has(id)) throw new VmcError('VMC_ERR_CONTAINER_EXISTS', `task ${id} already exists`);
        const paths = this.#ioPaths('CreateTaskRequest', r);
        const rootfs = r.rootfs.map((m, i) => {
          if (!m.type)
            throw new VmcError('VMC_ERR_SHIM_BAD_REQUEST', `CreateTaskRequest.rootfs[${i}].type is empty`);
          return { type: m.type, source: m.source, options: m.options };
        });
        const io = this.#d.openIo(paths);
        let handle: Awaited<ReturnType<TaskBackend['create']>>;
        try {
          handle = await this.#d.backend.create({ id, bundle, rootfs });
        } catch (err) {
          io.close();
          throw err;
        }
        const sandbox = handle.shim.sandboxId ? (this.#tasks.get(handle.shim.sandboxId) ?? null) : null;
        const deps = {
          clock: this.#d.clock,
          logger: this.#d.logger,
          livenessMs: this.#d.livenessMs,
          onOom: () => this.#d.events.publish({ topic: '/tasks/oom', event: { containerId: id } }),
        };
        const terminal = r.terminal ? new TaskTerminal() : null;
        const task = new ContainerTask(id, bundle, handle, io, paths, terminal, sandbox, deps);
        this.#tasks.set(id, task);
        void task.end.exited.then((e) => this.#exited(id, id, e));
        const pid = this.#d.pid;
        this.#d.events.publish({
          topic: '/tasks/create',
          event: {
            containerId: id,
            bundle,
            rootfs: r.rootfs,
            io: { ...paths, terminal: r.terminal },
            checkpoint: '',
            pid,
          },
        });
        return { pid };
      },

      start: async (r) => {
        const { task, exec } = this.#find(r);
        const pid = this.#d.pid;
        if (exec) {
          if (task.status !== 'running')
            throw new VmcError(
              'VMC_ERR_INVALID_STATE',
              `task ${task.id} is ${task.status}: exec needs running`,
            );
          await exec.start(task.shim, pid);
          this.#d.events.publish({
            topic: '/tasks/exec-started',
            event: { containerId: task.id, execId: exec.execId, pid },
          });
          return { pid };
        }
        await task.start();
        this.#d.backend.started?.(task.id);
        this.#d.events.publish({ topic: '/tasks/start', event: { containerId: task.id, pid } });
        return { pid };
      },

      state: async (r) => {
        const { task, exec } = this.#find(r);
        const proc = exec ?? task;
        const exit = proc.end.exit;
        return {
          id: task.id,
          bundle: task.bundle,
          pid: this.#d.pid,
          status: STATUS[proc.status],
          ...this.#pathsOf(exec ? exec.paths : task.paths),
          terminal: (exec ?? task).terminal !== null,
          exitStatus: exit?.status ?? 0,
          exitedAt: exit ? timestampOf(exit.at) : undefined,
          execId: exec?.execId ?? '',
        };
      },

      wait: async (r, ctx) => {
        const { exec, task } = this.#find(r);
        const e = await abortable((exec ?? task).end.exited, ctx);
        return { exitStatus: e.status, exitedAt: timestampOf(e.at) };
      },

      kill: async (r) => {
        const { task, exec } = this.#find(r);
        const n = signalNumber('KillRequest.signal', r.signal);
        const sig = parseSignal(String(n));
        if (!sig)
          throw new VmcError('VMC_ERR_SHIM_BAD_REQUEST', `KillRequest.signal ${n} is not a signal here`);
        const proc = exec ?? task;
        if (proc.end.exit) throw notFound(`process ${r.execId || r.id} (it has exited)`);
        if (exec) {
          await exec.kill(sig, signalExitCode(sig));
          return {};
        }
        const owner = task.owner;
        if (r.all && task.status === 'running' && !task.stopping && owner.signalAll)
          await owner.signalAll(task.id, sig);
        else await task.shim.kill(sig);
        return {};
      },

      delete: async (r) => {
        const { task, exec } = this.#find(r);
        if (exec) {
          // An exec never started (or whose start failed: a program that is not there) is deleted as it is,
          // as containerd's runc shim does; ctr deletes it after a failed Start and waits for the answer.
          if (exec.status === 'created') await exec.kill('SIGKILL', signalExitCode('SIGKILL'));
          if (!exec.end.exit)
            throw new VmcError('VMC_ERR_INVALID_STATE', `exec ${exec.execId} is running: kill it first`);
          task.execs.delete(exec.execId);
          return {
            pid: this.#d.pid,
            exitStatus: exec.end.exit.status,
            exitedAt: timestampOf(exec.end.exit.at),
          };
        }
        if (task.status === 'created') {
          await task.shim.kill('SIGKILL');
          await waitAtMost(task.end.exited, this.#d.stopWaitMs, this.#d.clock);
        } else if (task.stopping) {
          // The process exited and its VM is being destroyed: the exit comes with the end of that.
          await waitAtMost(task.end.exited, this.#d.stopWaitMs, this.#d.clock);
        }
        const exit = task.end.exit;
        if (!exit)
          throw new VmcError(
            'VMC_ERR_INVALID_STATE',
            task.stopping
              ? `task ${task.id} is still stopping after ${this.#d.stopWaitMs} ms (its VM is being destroyed): delete it again`
              : `task ${task.id} is ${task.status}: kill it first`,
          );
        task.dispose();
        this.#tasks.delete(task.id);
        await this.#d.backend.remove(task.id);
        const res = { pid: this.#d.pid, exitStatus: exit.status, exitedAt: timestampOf(exit.at) };
        this.#d.events.publish({
          topic: '/tasks/delete',
          event: { containerId: task.id, id: task.id, ...res },
        });
        return res;
      },

      exec: async (r) => {
        const { task } = this.#find({ id: r.id, execId: '' });
        const eid = execId('ExecProcessRequest.exec_id', r.execId);
        if (!eid) throw new VmcError('VMC_ERR_SHIM_BAD_REQUEST', 'ExecProcessRequest.exec_id is empty');
        if (task.execs.has(eid)) throw new VmcError('VMC_ERR_CONTAINER_EXISTS', `exec ${eid} already exists`);
        if (task.status !== 'running')
          throw new VmcError(
            'VMC_ERR_INVALID_STATE',
            `task ${task.id} is ${task.status}: exec needs running`,
          );
        const proc = execProcessOfSpec(r.spec);
        const paths = this.#ioPaths('ExecProcessRequest', r);
        const terminal = r.terminal ? new TaskTerminal() : null;
        const io = this.#d.openIo(paths);
        const exec = new ExecTask(eid, proc, io, paths, terminal, () => this.#d.clock.now());
        task.execs.set(eid, exec);
        void exec.end.exited.then((e) => this.#exited(task.id, eid, e));
        this.#d.events.publish({ topic: '/tasks/exec-added', event: { containerId: task.id, execId: eid } });
        return {};
      },

      resizePty: async (r) => {
        const { task, exec } = this.#find(r);
        const size = ptySize(r);
        // A resize of a process without a terminal changes nothing, as in containerd's runc shim.
        if (size) (exec ?? task).terminal?.resize(size);
        return {};
      },

      closeIO: async (r) => {
        const { task, exec } = this.#find(r);
        if (r.stdin) (exec ?? task).io.closeStdin();
        return {};
      },

      pids: async (r) => {
        const { task } = this.#find({ id: r.id, execId: '' });
        if (task.end.exit) return { processes: [] };
        // The guest's pids of the container's cgroup while it runs; before (and while the VM is frozen,
        // when the agent cannot answer) the daemon stands for them.
        const pids = task.status === 'running' && !task.stopping ? (await task.stats()).procs : [this.#d.pid];
        return { processes: pids.map((pid) => ({ pid, info: undefined })) };
      },

      stats: async (r) => {
        const { task } = this.#find({ id: r.id, execId: '' });
        this.#need(task, 'stats', ['running']);
        return { stats: metricsOf(await task.stats()) };
      },

      update: async (r) => {
        const { task } = this.#find({ id: r.id, execId: '' });
        const u = resourceUpdateOfAny(r.resources, (msg) => this.#d.logger.warn({ id: task.id }, msg));
        this.#need(task, 'update', ['running', 'paused']);
        if (Object.keys(u).length) await task.update(u);
        return {};
      },

      pause: async (r) => this.#pauseResume(r.id, 'pause'),
      resume: async (r) => this.#pauseResume(r.id, 'resume'),

      connect: async (r) => {
        const { task } = this.#find({ id: r.id, execId: '' });
        return { shimPid: this.#d.pid, taskPid: task.end.exit ? 0 : this.#d.pid, version: '' };
      },

      shutdown: async () => {
        if (this.#tasks.size === 0) this.#d.onShutdown();
        return {};
      },
    };
  }

  #need(task: ContainerTask, op: string, states: TaskStatus[]): void {
    if (!states.includes(task.status))
      throw new VmcError(
        'VMC_ERR_INVALID_STATE',
        `task ${task.id} is ${task.status}: ${op} needs ${states.join(' or ')}`,
      );
  }

  async #pauseResume(rawId: string, op: 'pause' | 'resume') {
    const { task } = this.#find({ id: rawId, execId: '' });
    const fn = task.shim[op];
    if (!fn)
      throw new VmcError(
        'VMC_ERR_SHIM_UNSUPPORTED',
        `task ${task.id} shares the VM of sandbox ${task.shim.sandboxId}: ${op} the sandbox (the pod is one VM)`,
      );
    await fn.call(task.shim);
    this.#d.events.publish(
      op === 'pause'
        ? { topic: '/tasks/paused', event: { containerId: task.id } }
        : { topic: '/tasks/resumed', event: { containerId: task.id } },
    );
    return {};
  }

  #find(r: { id: string; execId: string }): { task: ContainerTask; exec: ExecTask | null } {
    const id = taskId('id', r.id);
    const eid = execId('exec_id', r.execId);
    const task = this.#tasks.get(id);
    if (!task) throw notFound(`task ${id}`);
    if (!eid) return { task, exec: null };
    const exec = task.execs.get(eid);
    if (!exec) throw notFound(`exec ${eid} of task ${id}`);
    return { task, exec };
  }

  #ioPaths(msg: string, r: IoPaths): IoPaths {
    return {
      stdin: ioPath(`${msg}.stdin`, r.stdin),
      stdout: ioPath(`${msg}.stdout`, r.stdout),
      stderr: ioPath(`${msg}.stderr`, r.stderr),
    };
  }

  #pathsOf(p: IoPaths): IoPaths {
    return { stdin: p.stdin, stdout: p.stdout, stderr: p.stderr };
  }

  #exited(containerId: string, id: string, e: TaskExit): void {
    this.#d.events.publish({
      topic: '/tasks/exit',
      event: { containerId, id, pid: this.#d.pid, exitStatus: e.status, exitedAt: timestampOf(e.at) },
    });
  }
}

/** `p`, or a rejection when the call is cancelled (its deadline, or containerd closed the connection). */
function abortable<T>(p: Promise<T>, ctx: CallContext): Promise<T> {
  if (ctx.signal.aborted) return Promise.reject(ctx.signal.reason);
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(ctx.signal.reason);
    ctx.signal.addEventListener('abort', onAbort, { once: true });
    p.then(resolve, reject).finally(() => ctx.signal.removeEventListener('abort', onAbort));
  });
}
