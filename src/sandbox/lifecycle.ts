import { messageOf, VmcError } from '../errors.js';
import type { Logger } from '../platform/logger.js';
import { identify } from '../platform/process.js';
import type { ExitStatus } from '../protocol/agent/client.js';
import type { ContainerState, ContainerStatus, StateStore } from './state-store.js';

/** A shim's state: the one it records (`creating` until `create` has finished). */
export type ShimStatus = ContainerStatus;

/** The states in which a container has not stopped. */
export const LIVE: readonly ShimStatus[] = ['creating', 'created', 'running', 'paused'];

/** The states a kill is for: a created container is stopped by it, a running or paused one signalled. */
export const KILLABLE: readonly ShimStatus[] = ['created', 'running', 'paused'];

/**
 * The life cycle of a container as its host-side process (the "shim") holds it, and the only place its status
 * changes: creating → created → running ⇄ paused, and from any of them, once, → stopped. Each change is a
 * guarded transition in the manner of grpc-js's `transitionToState`: from some states to one, set at once (a
 * request arriving meanwhile sees it), logged, and recorded in the state store. An illegal one throws the
 * VMC_ERR_INVALID_STATE the CLI reports, naming the operation and the state it needs.
 */
export class ShimLifecycle {
  #status: ShimStatus = 'creating';

  constructor(
    readonly id: string,
    private readonly deps: { store: StateStore; logger: Logger },
  ) {}

  /** The current state. */
  get status(): ShimStatus {
    return this.#status;
  }

  /** Throws VMC_ERR_INVALID_STATE unless the state is one of `from`; `op` names what needs it. */
  need(op: string, from: readonly ShimStatus[], message?: string): void {
    if (!from.includes(this.#status))
      throw new VmcError(
        'VMC_ERR_INVALID_STATE',
        message ?? `container ${this.id} is ${this.#status}, ${op} needs ${from.join(' or ')}`,
      );
  }

  /**
   * Moves from one of `from` to `to` (else throws as `need` does) and resolves once the state store records
   * it, with the fields `record` sets.
   */
  async transition(
    op: string,
    from: readonly ShimStatus[],
    to: Exclude<ShimStatus, 'stopped'>,
    record?: (s: ContainerState) => void,
  ): Promise<void> {
    this.need(op, from);
    this.#enter(to);
    await this.deps.store.update(this.id, (s) => {
      s.status = to;
      record?.(s);
    });
  }

  /** Moves from creating to created, recording the VM it runs in and this process as the one standing for it. */
  created(vmId: string): Promise<void> {
    return this.transition('create', ['creating'], 'created', (s) => {
      s.vmId = vmId;
      s.shim = identify(process.pid);
    });
  }

  /**
   * Moves to stopped, from any state; false when it is there already (stopping happens once, whoever asks
   * first). The store records it only in `recordStopped`, once the shim has cleaned up, so that the record
   * never says stopped while the VM still runs.
   */
  stop(): boolean {
    if (this.#status === 'stopped') return false;
    this.#enter('stopped');
    return true;
  }

  /** Records the stop and the exit status; a failure is logged (the container has stopped all the same). */
  async recordStopped(exit: ExitStatus): Promise<void> {
    await this.deps.store
      .update(this.id, (s) => {
        s.status = 'stopped';
        s.exit = exit;
      })
      .catch((e: unknown) => this.deps.logger.error({ err: messageOf(e) }, 'recording the exit'));
  }

  #enter(to: ShimStatus): void {
    this.deps.logger.debug({ id: this.id, from: this.#status, to }, 'container state');
    this.#status = to;
  }
}
