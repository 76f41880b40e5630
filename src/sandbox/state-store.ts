import {
  closeSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  unlinkSync,
  writeSync,
} from 'node:fs';
import { join } from 'node:path';
import { VmcError } from '../errors.js';
import { writeFileAtomic } from '../platform/atomic-write.js';
import type { Clock } from '../platform/clock.js';
import { identify, isAlive, type ProcessIdentity } from '../platform/process.js';
import { isContainerId } from '../protocol/guards.js';

/** A container's life-cycle state as vmcache records it (`creating` until `create` has finished). */
export type ContainerStatus = 'creating' | 'created' | 'running' | 'paused' | 'stopped';

/** What is kept on disk for one container, enough to rebuild its OCI state without any live process. */
export interface ContainerState {
  version: 1;
  id: string;
  bundle: string;
  rootfs: string;
  /** ISO 8601 creation time. */
  created: string;
  status: ContainerStatus;
  /** The host-side process that stands for the container (its pid is the container's pid). */
  shim: ProcessIdentity | null;
  /** The VM the container runs in, once it has one. */
  vmId: string | null;
  /** For a pod member: the sandbox whose VM it shares (that VM is the sandbox's, never the member's to stop). */
  sandboxId?: string | null;
  /** How the container's process ended, once stopped. */
  exit: { code: number | null; signal: string | null } | null;
  annotations: Record<string, string>;
}

/** Throws a usage error unless `id` is a valid container id. */
/**
 * The record of a container being created (`creating`, no shim or VM yet) from its bundle's configuration;
 * `member`: it joins its sandbox's VM. What `create` (the CLI) and the shim v2's Create reserve.
 */
export function newContainerState(
  id: string,
  cfg: {
    bundle: string;
    rootfs: string;
    annotations: ContainerState['annotations'];
    sandboxId?: string | null;
  },
  member: boolean,
  clock: Pick<Clock, 'now'>,
): ContainerState {
  return {
    version: 1,
    id,
    bundle: cfg.bundle,
    rootfs: cfg.rootfs,
    created: new Date(clock.now()).toISOString(),
    status: 'creating',
    shim: null,
    vmId: null,
    exit: null,
    annotations: cfg.annotations,
    sandboxId: member ? (cfg.sandboxId ?? null) : null,
  };
}

export function checkId(id: string): void {
  if (!isContainerId(id))
    throw new VmcError(
      'VMC_ERR_CLI_USAGE',
      `invalid container id ${JSON.stringify(id)}: use letters, digits and + - . _ only`,
    );
}

/**
 * The OCI status of a recorded state: a container whose host-side process is gone is stopped, whatever was
 * recorded last (the process was killed, or the host rebooted).
 */
export function effectiveStatus(s: ContainerState): ContainerStatus {
  if (s.status === 'stopped' || s.status === 'creating') return s.status;
  return s.shim && isAlive(s.shim) ? s.status : 'stopped';
}

/** How long to wait for another invocation's lock before giving up. */
const LOCK_TIMEOUT_MS = 10_000;

/**
 * Container state under `--root`: `<root>/containers/<id>/state.json`, written atomically (temp file +
 * rename), with a per-container lock file for read-modify-write transitions. A lock whose holder died is
 * taken over, so a killed invocation never wedges a container.
 */
export class StateStore {
  readonly dir: string;

  constructor(
    readonly root: string,
    private readonly clock: Clock,
  ) {
    this.dir = join(root, 'containers');
  }

  /** The container's directory. */
  containerDir(id: string): string {
    return join(this.dir, id);
  }

  /** Creates the container's directory; fails if the id is taken (atomic: mkdir). */
  reserve(state: ContainerState): void {
    checkId(state.id);
    mkdirSync(this.dir, { recursive: true, mode: 0o711 });
    try {
      mkdirSync(this.containerDir(state.id), { mode: 0o700 });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'EEXIST')
        throw new VmcError('VMC_ERR_CONTAINER_EXISTS', `container ${state.id} already exists in ${this.dir}`);
      throw e;
    }
    this.write(state);
  }

  /** The recorded state; VMC_ERR_CONTAINER_NOT_FOUND when there is none. */
  read(id: string): ContainerState {
    checkId(id);
    let text: string;
    try {
      text = readFileSync(join(this.containerDir(id), 'state.json'), 'utf8');
    } catch {
      throw new VmcError('VMC_ERR_CONTAINER_NOT_FOUND', `container ${id} does not exist (in ${this.dir})`);
    }
    const s = JSON.parse(text) as ContainerState;
    if (s.version !== 1 || s.id !== id)
      throw new VmcError('VMC_ERR_CONTAINER_NOT_FOUND', `container ${id}: unreadable state in ${this.dir}`);
    return s;
  }

  /** Writes the state atomically. */
  write(state: ContainerState): void {
    const file = join(this.containerDir(state.id), 'state.json');
    writeFileAtomic(file, `${JSON.stringify(state, null, 2)}\n`, { mode: 0o600 });
  }

  /** Ids of every recorded container (sorted). */
  list(): string[] {
    try {
      return readdirSync(this.dir)
        .filter((d) => isContainerId(d))
        .sort();
    } catch {
      return [];
    }
  }

  /** Removes the container's directory. */
  remove(id: string): void {
    rmSync(this.containerDir(id), { recursive: true, force: true });
  }

  /** Runs `fn` holding the container's lock. */
  async withLock<T>(id: string, fn: () => Promise<T> | T): Promise<T> {
    const lock = join(this.containerDir(id), 'lock');
    const me = identify(process.pid);
    const deadline = this.clock.monotonic() + LOCK_TIMEOUT_MS;
    for (;;) {
      try {
        const fd = openSync(lock, 'wx', 0o600);
        writeSync(fd, JSON.stringify(me));
        closeSync(fd);
        break;
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if (code === 'ENOENT') this.read(id); // the container is gone: report that
        if (code !== 'EEXIST') throw e;
      }
      if (this.#holderDead(lock)) {
        rmSync(lock, { force: true });
        continue;
      }
      if (this.clock.monotonic() > deadline)
        throw new VmcError(
          'VMC_ERR_CONTAINER_LOCKED',
          `container ${id} is locked by another vmcache process`,
        );
      await this.clock.sleep(10);
    }
    try {
      return await fn();
    } finally {
      try {
        unlinkSync(lock);
      } catch {
        // removed together with the container
      }
    }
  }

  #holderDead(lock: string): boolean {
    try {
      const holder = JSON.parse(readFileSync(lock, 'utf8')) as ProcessIdentity | null;
      return !holder || !isAlive(holder);
    } catch {
      // Unreadable: a holder that died between create and write, or one writing right now. The write is a
      // single small syscall, so the lock is dead if it stayed unreadable for a second.
      try {
        return this.clock.now() - statSync(lock).mtimeMs > 1_000;
      } catch {
        return true;
      }
    }
  }

  /** Reads, changes and writes the state under the lock. */
  update(id: string, change: (s: ContainerState) => void): Promise<ContainerState> {
    return this.withLock(id, () => {
      const s = this.read(id);
      change(s);
      this.write(s);
      return s;
    });
  }
}
