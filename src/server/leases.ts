import { randomBytes } from 'node:crypto';
import type { Clock } from '../platform/clock.js';
import type { Logger } from '../platform/logger.js';
import { isAlive, type ProcessIdentity } from '../platform/process.js';
import { readRecord, type VmRecord } from '../vm/record.js';
import { destroyRecord, type VmDeps } from '../vm/vm.js';

/** A VM handed to a client that has not acknowledged it yet. */
interface Lease {
  leaseId: string;
  record: VmRecord;
  expiresAt: number;
  cancel: () => void;
}

/** Outcome of a lease that ran out. */
export type LeaseOutcome = 'acked' | 'adopted' | 'reclaimed';

/**
 * Leases make the hand-off leak-proof. The server stays responsible for a VM it handed out until the client
 * acknowledges it (AckVM). When a lease runs out, the VM record on disk decides: if a live process other than
 * the server has recorded itself as owner, the client took the VM and only the acknowledgement was lost;
 * otherwise the client died mid hand-off and the VM is stopped.
 */
export class LeaseTable {
  readonly #leases = new Map<string, Lease>();
  readonly #self: ProcessIdentity;
  readonly #deps: VmDeps;
  readonly #log: Logger;
  readonly #clock: Clock;
  readonly #onOutcome: (o: LeaseOutcome) => void;

  constructor(self: ProcessIdentity, deps: VmDeps, onOutcome: (o: LeaseOutcome) => void = () => {}) {
    this.#self = self;
    this.#deps = deps;
    this.#clock = deps.clock;
    this.#log = deps.logger.child({ subsystem: 'server.leases' });
    this.#onOutcome = onOutcome;
  }

  /** Number of open leases. */
  get size(): number {
    return this.#leases.size;
  }

  /** Opens a lease on a VM just handed out. */
  open(record: VmRecord, timeoutMs: number): { leaseId: string; expiresAt: number } {
    const leaseId = randomBytes(12).toString('hex');
    const expiresAt = this.#clock.now() + timeoutMs;
    const cancel = this.#clock.setTimeout(() => void this.expire(record.id), timeoutMs);
    this.#leases.set(record.id, { leaseId, record, expiresAt, cancel });
    return { leaseId, expiresAt };
  }

  /** Ends a lease on acknowledgement. Returns false when the lease is unknown (expired) or the id is wrong. */
  ack(vmId: string, leaseId: string): boolean {
    const l = this.#leases.get(vmId);
    if (!l || l.leaseId !== leaseId) return false;
    l.cancel();
    this.#leases.delete(vmId);
    this.#onOutcome('acked');
    return true;
  }

  /** Resolves a lease now: forget the VM if someone adopted it, stop it otherwise. */
  async expire(vmId: string): Promise<LeaseOutcome | null> {
    const l = this.#leases.get(vmId);
    if (!l) return null;
    l.cancel();
    this.#leases.delete(vmId);
    let owner: ProcessIdentity | null = null;
    try {
      owner = readRecord(l.record.files.dir).owner;
    } catch {
      // record gone: the client destroyed the VM already
      this.#onOutcome('adopted');
      return 'adopted';
    }
    const adopted =
      owner !== null &&
      !(owner.pid === this.#self.pid && owner.startTime === this.#self.startTime) &&
      isAlive(owner);
    if (adopted) {
      this.#log.info({ vmId, owner: owner?.pid }, 'lease expired but the VM was adopted; forgetting it');
      this.#onOutcome('adopted');
      return 'adopted';
    }
    this.#log.warn({ vmId }, 'lease expired and nobody took the VM: stopping it');
    await destroyRecord(l.record, this.#deps, 0);
    this.#onOutcome('reclaimed');
    return 'reclaimed';
  }

  /** Resolves every open lease now (server shutdown). */
  async expireAll(): Promise<void> {
    await Promise.all([...this.#leases.keys()].map((id) => this.expire(id)));
  }
}
