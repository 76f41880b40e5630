import { statfsSync } from 'node:fs';
import type { VmSpec } from '../hypervisor/types.js';
import { readBundle } from '../oci/bundle.js';
import { PhaseRecorder, type PhaseReport } from '../platform/phases.js';
import { UndoStack } from '../platform/undo-stack.js';
import type { ControlledShim } from '../sandbox/control-handler.js';
import { SandboxShim } from '../sandbox/sandbox-shim.js';
import { createShim } from '../sandbox/shim.js';
import type { SandboxDeps } from '../sandbox/shim-interface.js';
import { newContainerState } from '../sandbox/state-store.js';
import type { CreateContainer, TaskBackend } from './backend.js';
import type { ContainerHandle } from './container-task.js';
import { mountRootfs, unmountRootfs } from './rootfs.js';

/**
 * The backend of the daemon: containers are the sandbox layer's shims, made in this process. A sandbox (no
 * CRI annotation, or container-type `sandbox`) takes a VM from the cache as `vmcache create` does; a member
 * joins its sandbox's VM. Members reach their sandbox through its control socket, which the sandbox's shim
 * serves from this same process: MemberShim's only route to its sandbox is a ControlClient, and the loopback
 * costs one Unix-socket round trip per operation (no process start), so the runc-CLI path's tested member
 * code is used as it is instead of a second, in-process copy of it.
 */
export class VmBackend implements TaskBackend {
  /** The rootfs each container got mounted, to unmount at removal. */
  readonly #mounted = new Map<string, string>();
  /** The phase recorder of each container until its Start has been recorded (VMCACHE_PHASES). */
  readonly #traces = new Map<string, PhaseRecorder>();

  constructor(
    private readonly deps: SandboxDeps,
    /** The VM spec the configuration gives (read at the first Create: a missing image fails that Create). */
    private readonly spec: () => VmSpec,
    /** Given: each container's Create + Start phase breakdown goes to it (VMCACHE_PHASES, for the bench). */
    private readonly phases?: (report: PhaseReport) => void,
  ) {}

  async create(req: CreateContainer): Promise<ContainerHandle> {
    const { id, bundle } = req;
    // Read once before the mount for the rootfs path (config.json's root.path, `rootfs` for containerd).
    const before = readBundle(bundle, (p) => statfsSync(p));
    const undo = new UndoStack();
    try {
      if (req.rootfs.length) {
        await mountRootfs(req.rootfs, before.rootfs, this.deps);
        undo.push('unmount rootfs', () => unmountRootfs(before.rootfs, this.deps));
      }
      const cfg = readBundle(bundle, (p) => statfsSync(p));
      const member = cfg.containerType === 'container' && cfg.sandboxId !== id;
      this.deps.store.reserve(newContainerState(id, cfg, member, this.deps.clock));
      undo.push('remove the record', () => this.deps.store.remove(id));
      const trace = this.phases ? new PhaseRecorder(this.deps.clock) : undefined;
      const opts = { useCache: true, ...(trace ? { trace } : {}) };
      const shim = (await createShim(id, this.spec(), this.deps, opts)) as ControlledShim;
      if (trace) this.#traces.set(id, trace);
      undo.release();
      if (req.rootfs.length) this.#mounted.set(id, before.rootfs);
      if (shim instanceof SandboxShim) return { shim, vmAlive: () => shim.vm.alive() };
      return { shim };
    } catch (err) {
      await undo.unwind();
      throw err;
    }
  }

  /** The container's Create and Start phases go to `phases` (the Start's laps are the sandbox shim's own). */
  started(id: string): void {
    const trace = this.#traces.get(id);
    this.#traces.delete(id);
    if (trace) this.phases?.(trace.report());
  }

  async remove(id: string): Promise<void> {
    this.#traces.delete(id);
    this.deps.store.remove(id);
    const rootfs = this.#mounted.get(id);
    this.#mounted.delete(id);
    if (rootfs) await unmountRootfs(rootfs, this.deps);
  }
}
