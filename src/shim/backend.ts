import type { ContainerHandle } from './container-task.js';
import type { RootfsMount } from './rootfs.js';

/** What Create asks the backend for. */
export interface CreateContainer {
  id: string;
  /** The bundle directory (config.json; `rootfs` under it is where `rootfs` gets mounted). */
  bundle: string;
  /** containerd's mounts for the rootfs (an overlay snapshot), or empty when the bundle has its rootfs. */
  rootfs: RootfsMount[];
}

/**
 * How the Task service makes and removes containers, behind one small interface so that the service is
 * tested over fakes: the real one (`VmBackend`) takes a VM from the cache for a sandbox and joins it for a
 * pod member, through the sandbox layer's shims.
 */
export interface TaskBackend {
  /** Creates the container (state `created`); undone on failure. */
  create(req: CreateContainer): Promise<ContainerHandle>;
  /** The container's process has started (a backend may record how long its create and start took). */
  started?(id: string): void;
  /** Removes what `create` left once the container has stopped: its record and its rootfs mount. */
  remove(id: string): Promise<void>;
}
