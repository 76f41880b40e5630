import { randomBytes } from 'node:crypto';
import { mkdirSync, rmSync } from 'node:fs';
import { isVmcError, messageOf, VmcError } from '../errors.js';
import { AGENT_PORT_ID, buildQemuArgs, type QemuExtras } from '../hypervisor/qemu/cmdline.js';
import {
  connectUnix,
  type DetachedSpawner,
  spawnDetached,
  tail,
  waitForSocket,
} from '../hypervisor/qemu/launcher.js';
import { loadState } from '../hypervisor/qemu/migration.js';
import { cont, queryStatus, quit, stop } from '../hypervisor/qemu/qmp-commands.js';
import { flushTranslations } from '../hypervisor/qemu/translations.js';
import { type VmSpec, vmFiles } from '../hypervisor/types.js';
import type { Clock } from '../platform/clock.js';
import type { CommandRunner } from '../platform/command.js';
import type { Logger } from '../platform/logger.js';
import { unmountAllUnder } from '../platform/mounts.js';
import { type Paths, vmDir } from '../platform/paths.js';
import type { PhaseRecorder } from '../platform/phases.js';
import { exitsWithin, identify, isAlive, type ProcessIdentity, signalIfAlive } from '../platform/process.js';
import { UndoStack } from '../platform/undo-stack.js';
import { AgentClient, type AgentProcess, type RunResult } from '../protocol/agent/client.js';
import { handshakeFigures } from '../protocol/agent/figures.js';
import type { ExecRequest } from '../protocol/agent/messages.js';
import { QmpClient } from '../protocol/qmp/client.js';
import { readRecord, VM_RECORD_VERSION, type VmRecord, writeRecord } from './record.js';

/** Dependencies of VM operations. */
export interface VmDeps {
  paths: Paths;
  clock: Clock;
  logger: Logger;
  run: CommandRunner;
  spawner?: DetachedSpawner;
}

/** Timeouts, justified: under TCG on 2 loaded cores a cold boot to a ready agent takes 4–8 s (research §1). */
export interface VmTimeouts {
  qemuStartMs: number;
  agentReadyMs: number;
}

/** Default timeouts: generous multiples of the measured worst case, so a loaded CI host does not flake. */
export const DEFAULT_TIMEOUTS: VmTimeouts = { qemuStartMs: 15_000, agentReadyMs: 60_000 };

/** Milliseconds spent in each phase of a boot or attach. */
export interface VmTimings {
  spawnMs?: number;
  qmpMs: number;
  agentMs: number;
  totalMs: number;
}

/** Output of `Vm.run`. */

export type { RunResult };

/** A short random VM id (12 hex chars keeps socket paths far below the 107-byte limit). */
export function newVmId(): string {
  return randomBytes(6).toString('hex');
}

/**
 * A running QEMU guest and this process's connections to it. Obtained by `boot` (a new VM) or `attach` (one
 * that another process started). `detach()` leaves the VM running for its next owner; `destroy()` ends it and
 * removes every trace (process, sockets, state directory).
 */
export class Vm {
  #destroyed = false;
  /** Invariant: null only while the VM was attached paused and has not been resumed by this process. */
  #agent: AgentClient | null;

  private constructor(
    readonly record: VmRecord,
    readonly qmp: QmpClient,
    agent: AgentClient | null,
    readonly timings: VmTimings,
    readonly deps: VmDeps,
  ) {
    this.#agent = agent;
  }

  /** The agent connection. A VM adopted while paused connects to its agent on `resume()`. */
  get agent(): AgentClient {
    if (!this.#agent)
      throw new VmcError(
        'VMC_ERR_INVALID_STATE',
        `VM ${this.id} is paused and its agent not yet connected; resume it first`,
      );
    return this.#agent;
  }

  /** The VM id. */
  get id(): string {
    return this.record.id;
  }

  /** Boots a new VM and waits until its agent has answered the handshake. */
  static async boot(
    spec: VmSpec,
    deps: VmDeps,
    opts: {
      id?: string;
      timeouts?: VmTimeouts;
      signal?: AbortSignal;
      qemu?: QemuExtras;
      /** Start as a clone: QEMU must run with `incomingDefer`; the VM is returned paused and parked. */
      restoreFrom?: string;
      /** Laps `boot: spawn QEMU`, `boot: QMP socket + connect`, then `clone: load the template's state` or `boot: agent ready (guest boot)`. */
      trace?: PhaseRecorder;
    } = {},
  ): Promise<Vm> {
    const { clock, logger } = deps;
    const timeouts = opts.timeouts ?? DEFAULT_TIMEOUTS;
    const id = opts.id ?? newVmId();
    const files = vmFiles(vmDir(deps.paths, id));
    const log = logger.child({ vmId: id });
    const t0 = clock.monotonic();
    const undo = new UndoStack();
    const step = <T>(p: Promise<T>) => abortable(p, opts.signal, id);
    let qemu: ProcessIdentity | null = null;
    try {
      if (opts.signal?.aborted) throw interrupted(id);
      mkdirSync(files.dir, { recursive: true, mode: 0o700 });
      undo.push('remove state dir', () => rmSync(files.dir, { recursive: true, force: true }));
      mkdirSync(files.sharedDir, { mode: 0o700 });
      const args = buildQemuArgs(spec, files, id, opts.qemu);
      log.debug({ args }, 'starting QEMU');
      const proc = await (deps.spawner ?? spawnDetached)(spec.qemuPath, args, files.qemuLog);
      qemu = proc.identity;
      // Registered before anything can be aborted: the spawn itself always completes.
      undo.push('kill QEMU', () => signalIfAlive(proc.identity, 'SIGKILL'));
      const spawnMs = clock.monotonic() - t0;
      opts.trace?.lap('boot: spawn QEMU');
      const self = identify(process.pid);
      const record: VmRecord = {
        version: VM_RECORD_VERSION,
        id,
        createdAt: clock.now(),
        spec,
        files,
        qemu: proc.identity,
        owner: self,
        hotplug: { cpus: 0, memoryMiB: 0 },
      };
      // Recorded before anything else can fail, so that a crash from here on leaves a findable VM.
      writeRecord(record);
      const qmpSock = await step(waitForSocket(files.qmpSocket, proc, files, clock, timeouts.qemuStartMs));
      const qmp = new QmpClient(qmpSock, { clock });
      undo.push('close QMP', () => qmp.close());
      await step(qmp.connect());
      const qmpMs = clock.monotonic() - t0;
      opts.trace?.lap('boot: QMP socket + connect');
      let agent: AgentClient | null = null;
      if (opts.restoreFrom) {
        // A clone: load the template's device state; its RAM is the template's memory file (x-ignore-shared).
        await step(loadState(qmp, opts.restoreFrom, clock));
        opts.trace?.lap("clone: load the template's state");
      } else {
        agent = await step(
          connectAgent(files.agentSocket, clock, timeouts.agentReadyMs, files.consoleLog, record.id),
        );
        opts.trace?.lap('boot: agent ready (guest boot)');
      }
      const agentMs = clock.monotonic() - t0;
      undo.release();
      const timings = { spawnMs, qmpMs, agentMs, totalMs: agentMs };
      log.info({ timings, pid: proc.identity.pid }, 'VM booted');
      return new Vm(record, qmp, agent, timings, deps);
    } catch (err) {
      // QEMU can open its sockets and then fail (e.g. loading the kernel): whatever step noticed first, the
      // useful message is QEMU's own stderr.
      const other = !isVmcError(err, 'VMC_ERR_QEMU_EXITED') && !isVmcError(err, 'VMC_ERR_VM_INTERRUPTED');
      // A closed socket can be seen a moment before the process is gone: give it 300 ms to finish exiting.
      const exited = qemu !== null && other && (await exitsWithin(qemu, 300, clock));
      const stderr = exited ? tail(files.qemuLog) : '';
      await undo.unwind();
      if (exited) {
        throw new VmcError('VMC_ERR_QEMU_EXITED', `QEMU exited before the VM was ready:\n${stderr}`, {
          cause: err,
          details: { stderr },
        });
      }
      throw err;
    }
  }

  /**
   * Connects to a VM another process started (the hand-off path). With `takeOwnership`, this process becomes
   * the owner recorded on disk.
   */
  static async attach(
    id: string,
    deps: VmDeps,
    opts: { takeOwnership?: boolean; agentTimeoutMs?: number } = {},
  ): Promise<Vm> {
    const { clock } = deps;
    const t0 = clock.monotonic();
    const record = readRecord(vmDir(deps.paths, id));
    return Vm.attachRecord(record, deps, { ...opts, t0 });
  }

  /**
   * Like `attach`, from a record received from elsewhere (e.g. over the cache protocol). `pausedOnly`: the VM
   * must be paused (VMC_ERR_INVALID_STATE otherwise, before any agent wait): the entry point of re-adoption,
   * whose agent check is the resume that follows (vm/adopt.ts).
   */
  static async attachRecord(
    record: VmRecord,
    deps: VmDeps,
    opts: {
      takeOwnership?: boolean;
      agentTimeoutMs?: number;
      t0?: number;
      pausedOnly?: boolean;
      qmpTimeoutMs?: number;
      /** Laps `attach: QMP connect`, `attach: query-status`, `attach: agent` (a running VM) and `attach: owner`. */
      trace?: PhaseRecorder;
    } = {},
  ): Promise<Vm> {
    const { clock } = deps;
    const rec = opts.trace;
    const t0 = opts.t0 ?? clock.monotonic();
    if (!isAlive(record.qemu)) {
      throw new VmcError(
        'VMC_ERR_VM_DEAD',
        `VM ${record.id}: QEMU pid ${record.qemu.pid} is no longer running`,
      );
    }
    const qmp = new QmpClient(await connectUnix(record.files.qmpSocket), { clock });
    try {
      await qmp.connect(opts.qmpTimeoutMs);
      const qmpMs = clock.monotonic() - t0;
      rec?.lap('attach: QMP connect');
      // A paused guest cannot answer the handshake: connect to its agent when it is resumed.
      const status = await queryStatus(qmp, opts.qmpTimeoutMs);
      rec?.lap('attach: query-status');
      if (opts.pausedOnly && status !== 'paused')
        throw new VmcError('VMC_ERR_INVALID_STATE', `VM ${record.id} is ${status}, not paused`, {
          details: { status },
        });
      const agent =
        status === 'paused'
          ? null
          : await connectAgent(
              record.files.agentSocket,
              clock,
              opts.agentTimeoutMs ?? 10_000,
              record.files.consoleLog,
              record.id,
            );
      const agentMs = clock.monotonic() - t0;
      if (agent) rec?.lap('attach: agent');
      if (opts.takeOwnership) {
        record.owner = identify(process.pid);
        writeRecord(record);
        rec?.lap('attach: owner');
      }
      return new Vm(record, qmp, agent, { qmpMs, agentMs, totalMs: agentMs }, deps);
    } catch (err) {
      qmp.close();
      throw err;
    }
  }

  /** Starts a process in the guest. */
  exec(req: ExecRequest): Promise<AgentProcess> {
    return this.agent.exec(req);
  }

  /**
   * Writes back what the guest still holds for the VM's share (agent `sync`), so that everything its
   * containers wrote is on the host before the VM goes. Bounded; a guest that cannot answer (dead, paused) is
   * logged and skipped: writes reach the host as they return (cache=mmap), so only dirty pages of shared
   * mappings could be missing then.
   */
  async flushShared(timeoutMs = 5_000): Promise<void> {
    if (this.#destroyed || !this.#agent) return;
    await this.#agent
      .request({ op: 'sync' }, timeoutMs)
      .catch((err: unknown) =>
        this.deps.logger.warn(
          { vmId: this.id, err: messageOf(err) },
          'could not flush the share before stopping',
        ),
      );
  }

  /** Runs a command to completion and collects its output. */
  async run(
    args: string[],
    opts: Omit<ExecRequest, 'args'> & { input?: Buffer | string } = {},
  ): Promise<RunResult> {
    const { input, ...rest } = opts;
    return this.agent.run({ ...rest, args }, input);
  }

  /**
   * Readies a running VM for its next owner and pauses it: closes this process's agent connection, waits until
   * the guest agent has reopened its port (QMP `VSERPORT_CHANGE` open:true for the agent port), i.e. it is
   * blocked waiting for the next host, then pauses the vCPUs. The next owner's handshake after `resume()` then
   * takes milliseconds instead of the ~300 ms a resumed guest needs to notice that its old owner left.
   * QEMU rate-limits that event to one per second per port, hence the generous timeout; if it never comes,
   * the VM is paused anyway and the next handshake is merely slower.
   */
  async park(timeoutMs = 3_000): Promise<void> {
    const reopened = this.qmp
      .waitEvent('VSERPORT_CHANGE', (e) => e.data.id === AGENT_PORT_ID && e.data.open === true, timeoutMs)
      .catch(() => null);
    this.#agent?.close();
    this.#agent = null;
    await reopened;
    await this.pause();
  }

  /**
   * Under TCG, makes QEMU flush its translation buffer (see hypervisor/qemu/translations.ts), so that what
   * runs next stays translated until the buffer fills again; resolves with the guest's churn passes it took.
   * A no-op (0) under KVM.
   */
  async flushTranslations(): Promise<number> {
    if (this.record.spec.accel !== 'tcg') return 0;
    return flushTranslations(
      this.qmp,
      async (passes) => {
        await this.agent.request({ op: 'churn', passes }, 30_000);
      },
      this.deps.clock,
    );
  }

  /** Pauses the vCPUs (QMP `stop`). A frozen guest cannot answer liveness checks: they wait for `resume()`. */
  async pause(): Promise<void> {
    this.#agent?.suspendLiveness();
    try {
      await stop(this.qmp);
    } catch (err) {
      this.#agent?.resumeLiveness();
      throw err;
    }
  }

  /**
   * Resumes the vCPUs (QMP `cont`), and connects to the agent if this process has not yet. `trace`: laps
   * `<label>: QMP cont` and, when it connects, `<label>: agent connect + handshake` (with the handshake's figures).
   */
  async resume(trace?: PhaseRecorder, label = 'resume'): Promise<void> {
    if (this.#agent) {
      await cont(this.qmp);
      trace?.lap(`${label}: QMP cont`);
      this.#agent.resumeLiveness();
      return;
    }
    // Connect and start greeting *before* the vCPUs run: the parked guest finds our hello waiting when it
    // wakes, which saves a round trip on the hand-off path.
    const f = this.record.files;
    const agent = connectAgent(f.agentSocket, this.deps.clock, 10_000, f.consoleLog, this.record.id);
    agent.catch(() => undefined); // observed below; avoids an unhandled rejection if `cont` fails first
    await cont(this.qmp);
    trace?.lap(`${label}: QMP cont`);
    this.#agent = await agent;
    if (trace) {
      // The connect started before `cont`: what is left of it after `cont` returned.
      const phase = `${label}: agent connect + handshake`;
      trace.lap(phase);
      if (this.#agent.session) handshakeFigures(trace, phase, this.#agent.session.trace);
    }
  }

  /** QEMU's run state (`running`, `paused`, ...). */
  status(): Promise<string> {
    return queryStatus(this.qmp);
  }

  /** True while the QEMU process is alive. */
  alive(): boolean {
    return isAlive(this.record.qemu);
  }

  /**
   * Closes this process's QMP and agent connections and leaves the VM running. QEMU serves one QMP client at
   * a time and the agent serves one host connection, so the next owner can only connect after this.
   */
  detach(): void {
    this.#agent?.close();
    this.qmp.close();
  }

  /**
   * Gives the VM up for adoption by another process: records it as unowned (the orphan sweep leaves unowned
   * live VMs alone) and detaches. The adopter calls `Vm.attach(id, deps, { takeOwnership: true })`.
   */
  release(): void {
    this.record.owner = null;
    writeRecord(this.record);
    this.detach();
  }

  /**
   * Stops the VM and removes its state: QMP `quit` (QEMU exits at once; the guest root is read-only, so there
   * is nothing to flush), then SIGTERM, then SIGKILL, each after a bounded wait; then unmounts anything left
   * under the state directory and removes it. Idempotent.
   */
  async destroy(): Promise<void> {
    if (this.#destroyed) return;
    this.#destroyed = true;
    this.#agent?.close();
    if (!this.qmp.closed) await quit(this.qmp, 2_000).catch(() => undefined);
    this.qmp.close();
    await destroyRecord(this.record, this.deps);
  }
}

/**
 * Ends the QEMU of `record` (if still alive) and removes its state directory. Used by destroy and the sweep.
 * `quitGraceMs`: how long to wait for a QMP `quit` already sent to take effect before signalling (0 when none was).
 */
export async function destroyRecord(record: VmRecord, deps: VmDeps, quitGraceMs = 2_000): Promise<void> {
  const { clock, logger } = deps;
  const waitGone = (ms: number) => exitsWithin(record.qemu, ms, clock);
  if (!(await waitGone(quitGraceMs))) {
    signalIfAlive(record.qemu, 'SIGTERM'); // QEMU exits cleanly on SIGTERM
    if (!(await waitGone(2_000))) {
      signalIfAlive(record.qemu, 'SIGKILL');
      await waitGone(5_000);
    }
  }
  const left = await unmountAllUnder(deps.run, record.files.dir);
  if (left.length > 0) {
    // Never delete through a mount: that would delete the files of whatever is mounted there.
    logger.error({ vmId: record.id, mounts: left }, 'VM state directory still has mounts; left in place');
    return;
  }
  rmSync(record.files.dir, { recursive: true, force: true });
}

function interrupted(id: string): VmcError {
  return new VmcError('VMC_ERR_VM_INTERRUPTED', `boot of VM ${id} interrupted; the VM was stopped`);
}

/** Races `p` against `signal`; an abort rejects at once (the caller's undo stack then cleans up). */
function abortable<T>(p: Promise<T>, signal: AbortSignal | undefined, id: string): Promise<T> {
  if (!signal) return p;
  if (signal.aborted) return Promise.reject(interrupted(id));
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(interrupted(id));
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(
      (v) => {
        signal.removeEventListener('abort', onAbort);
        resolve(v);
      },
      (e: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(e);
      },
    );
  });
}

async function connectAgent(
  path: string,
  clock: Clock,
  timeoutMs: number,
  consoleLog: string,
  name: string,
): Promise<AgentClient> {
  const agent = new AgentClient(await connectUnix(path, 'VMC_ERR_AGENT_CLOSED'), { clock, name });
  try {
    await agent.handshake(timeoutMs);
    return agent;
  } catch (err) {
    agent.close();
    throw new VmcError(
      'VMC_ERR_AGENT_TIMEOUT',
      `guest agent not ready: ${messageOf(err)}\nguest console (last lines):\n${tail(consoleLog)}`,
      {
        cause: err,
        details: { console: tail(consoleLog) },
      },
    );
  }
}
