import type { MissPolicy } from '../config/schema.js';
import type { VmSpec } from '../hypervisor/types.js';
import type { PhaseRecorder } from '../platform/phases.js';
import type { Vm } from '../vm/vm.js';

/** One idle VM as reported by a factory that keeps some. */
export interface IdleVmStatus {
  id: string;
  pid: number;
  cpus: number;
  memoryMiB: number;
  ageMs: number;
  state: string;
}

/** Why an idle VM was stopped: QEMU dead or silent, past its max age, or the pool's target lowered. */
export type EvictReason = 'dead' | 'age' | 'shrink';

/** What a request asks of a base: its shape (a server of several pools routes by it) and its miss policy. */
export interface BaseVmRequest {
  /** vCPUs and MiB wanted; absent: the base's own (`config()`). */
  shape?: { cpus: number; memoryMiB: number };
  /** On an empty pool: wait (default), fail or boot cold. Only bases that keep VMs read it. */
  missPolicy?: MissPolicy;
  /**
   * Where a strategy that has phases worth telling apart laps them (the remote cache: RPC, attach, AckVM,
   * hand-out gate; direct and template: QEMU's start, the guest's boot or the clone's load); the others leave
   * it alone and the composer laps their whole call.
   */
  trace?: PhaseRecorder;
}

/** The state of a factory that keeps VMs (the cache pool). */
export interface FactoryStatus {
  target: number;
  idle: IdleVmStatus[];
  booting: number;
  hits: number;
  /** Requests that found no VM ready (all policies)... */
  misses: number;
  /** ...and by the miss policy they got. */
  missesByPolicy: Record<MissPolicy, number>;
  /** Boots for `cold` requests in flight (outside `booting` and the pool's size). */
  coldBooting: number;
  /** VMs discarded at hand-out: QEMU dead or silent (the server's check), the agent silent (a client's). */
  handoutDiscards: { qemu: number; agent: number };
  /** Idle VMs stopped, by reason. */
  evicted: Record<EvictReason, number>;
  /** Moving averages (ms) of a boot for the pool (queueing included) and of the server's part of a hand-out. */
  bootMs: number | null;
  acquireMs: number | null;
  bootFailures: number;
  consecutiveFailures: number;
  lastError: string | null;
  nextRetryAt: number | null;
}

/**
 * A source of paused VMs booted from one configuration (Kata's `base.FactoryBase`). Strategies: DirectFactory
 * (boots), CachingFactory (a pool around another base), RemoteCacheFactory (a cache server's pool), and
 * TemplateFactory (clones). Compatibility checks, resume, reseed, clock and growth are the composer's job
 * (`VmFactory`), so every strategy only produces a paused VM.
 */
export interface FactoryBase {
  /** The boot configuration of the VMs this factory produces. */
  config(): VmSpec;
  /** A paused VM booted from `config()` (of `want.shape`, or smaller, where a base can); the caller owns it. */
  getBaseVM(signal?: AbortSignal, want?: BaseVmRequest): Promise<Vm>;
  /** Idle VMs and counters, for factories that keep VMs. */
  status?(): FactoryStatus;
  /** Releases the factory's resources (idle VMs are stopped; VMs already handed out are not touched). */
  close(): Promise<void>;
}
