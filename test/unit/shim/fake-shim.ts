import { PassThrough } from 'node:stream';
import type { ResourceUpdate } from '../../../src/oci/resource-update.js';
import type { WindowSize } from '../../../src/platform/terminal.js';
import type { ExitStatus } from '../../../src/protocol/agent/client.js';
import type { CgroupStats } from '../../../src/protocol/agent/messages.js';
import type { ControlReply } from '../../../src/protocol/control/messages.js';
import type { ExecSession } from '../../../src/protocol/control/server.js';
import type { ControlledShim, ExecControlRequest } from '../../../src/sandbox/control-handler.js';
import type { ShimStatus } from '../../../src/sandbox/lifecycle.js';
import type { Stdio } from '../../../src/sandbox/shim-interface.js';
import type { TaskBackend } from '../../../src/shim/backend.js';
import type { ContainerHandle } from '../../../src/shim/container-task.js';
import type { IoOpener, TaskIo } from '../../../src/shim/task-io.js';

/** A container shim that runs nothing: its "process" exits when told to (`exit`) or when killed. */
export class FakeShim implements ControlledShim {
  status: ShimStatus = 'created';
  readonly stopped: Promise<ExitStatus>;
  readonly signals: string[] = [];
  readonly signalledAll: Array<[string, string]> = [];
  readonly execs: Array<{
    req: ExecControlRequest;
    reply: (r: ControlReply) => void;
    stdin: Buffer[];
    resizes: WindowSize[];
  }> = [];
  stdio: Stdio | null = null;
  /** Set: start fails with this message (a program that is not there). */
  failStart: string | null = null;
  #resolve!: (s: ExitStatus) => void;
  pause?: () => Promise<void>;
  resume?: () => Promise<void>;
  signalAll?: (name: string, signal: string) => Promise<unknown>;
  update?: (name: string, r: ResourceUpdate) => Promise<void>;
  stats?: (name: string) => Promise<CgroupStats>;
  readonly updates: Array<[string, ResourceUpdate]> = [];
  /** What `stats` answers for each container name (the sandbox's and its members'). */
  readonly cgroups = new Map<string, CgroupStats>();

  constructor(
    readonly id: string,
    readonly sandboxId?: string,
  ) {
    this.stopped = new Promise((r) => {
      this.#resolve = r;
    });
    if (!sandboxId) {
      this.pause = async () => {
        this.status = 'paused';
      };
      this.resume = async () => {
        this.status = 'running';
      };
      this.signalAll = async (name, signal) => this.signalledAll.push([name, signal]);
      this.update = async (name, r) => void this.updates.push([name, r]);
      this.stats = async (name) => {
        const st = this.cgroups.get(name);
        if (!st) throw new Error(`no container cgroup ${name}`);
        return st;
      };
    }
  }

  async start(stdio: Stdio): Promise<void> {
    if (this.status !== 'created') throw new Error(`start needs created, is ${this.status}`);
    if (this.failStart) throw new Error(this.failStart);
    this.stdio = stdio;
    this.status = 'running';
  }

  async kill(signal: string): Promise<void> {
    this.signals.push(signal);
    this.exit({ code: null, signal });
  }

  pids(): number[] {
    return [process.pid];
  }

  async exec(req: ExecControlRequest, reply: (r: ControlReply) => void): Promise<ExecSession> {
    if (req.process.args[0] === 'nope') throw new Error('executable file not found');
    const e = { req, reply, stdin: [] as Buffer[], resizes: [] as WindowSize[] };
    this.execs.push(e);
    reply({ t: 'ok', result: { guestPid: 9 } });
    return {
      write: async (d) => void e.stdin.push(d),
      end: async () => undefined,
      kill: async (signal) => reply({ t: 'exit', code: null, signal }),
      resize: async (size) => void e.resizes.push(size),
      abandon: () => undefined,
    };
  }

  /** The container's process ends with `st`. */
  exit(st: ExitStatus): void {
    this.status = 'stopped';
    this.#resolve(st);
  }
}

/** A backend whose containers are FakeShims (a member when its id starts with `m-`, of sandbox `sb`). */
export class FakeBackend implements TaskBackend {
  readonly shims = new Map<string, FakeShim>();
  readonly removed: string[] = [];
  vmAlive = true;

  async create(req: { id: string; bundle: string }): Promise<ContainerHandle> {
    if (req.bundle.endsWith('/broken')) throw new Error('bundle is broken');
    const shim = new FakeShim(req.id, req.id.startsWith('m-') ? 'sb' : undefined);
    if (req.bundle.endsWith('/nope')) shim.failStart = 'exec: "nope": executable file not found in $PATH';
    this.shims.set(req.id, shim);
    return shim.sandboxId ? { shim } : { shim, vmAlive: () => this.vmAlive };
  }

  async remove(id: string): Promise<void> {
    this.removed.push(id);
  }
}

/** An IO opener over in-memory streams; `outputs` has what each process wrote, by its stdout path. */
export function fakeIo(): { open: IoOpener; outputs: Map<string, string>; closed: string[] } {
  const outputs = new Map<string, string>();
  const closed: string[] = [];
  const open: IoOpener = (paths) => {
    const stdin = new PassThrough();
    const out = new PassThrough();
    out.on('data', (d: Buffer) => outputs.set(paths.stdout, (outputs.get(paths.stdout) ?? '') + d));
    const io: TaskIo = {
      stdin,
      stdout: out,
      stderr: out,
      closeStdin: () => void stdin.end(),
      close: () => {
        closed.push(paths.stdout);
        stdin.end();
      },
    };
    return io;
  };
  return { open, outputs, closed };
}

/** A guest cgroup's stats as the agent reads them (`oomKills` killed for memory so far). */
export function cgroupStats(oomKills = 0, procs = [7, 9]): CgroupStats {
  return {
    memory: {
      current: 5 << 20,
      max: null,
      peak: 6 << 20,
      stat: { anon: 3 << 20, inactive_file: 1 << 20, kernel_stack: 16384, not_in_metrics: 1 },
      events: { oom: oomKills, oom_kill: oomKills },
    },
    cpu: { usage_usec: 1500, user_usec: 1000, system_usec: 500 },
    pids: { current: procs.length, max: 100 },
    procs,
  };
}
