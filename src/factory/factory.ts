import { randomBytes } from 'node:crypto';
import { isDeepStrictEqual } from 'node:util';
import { BOOT_RELEVANT_FIELDS, type VmSpec } from '../hypervisor/types.js';
import { grow } from '../vm/resize.js';
import type { Vm, VmDeps } from '../vm/vm.js';
import type { FactoryBase } from './base.js';
import { DirectFactory } from './direct.js';
import { type FactoryMetrics, nullMetrics } from './metrics.js';

/** Where a VM came from. */
export type VmSource = 'base' | 'fallback';

/** A VM ready for use, and how it was obtained. */
export interface ObtainedVm {
  vm: Vm;
  source: VmSource;
  /** Boot-relevant fields that differed from the base (non-empty only for a fallback). */
  mismatched: string[];
  /** Milliseconds per phase. */
  timings: { acquireMs: number; readyMs: number; totalMs: number };
}

/** The boot-relevant fields on which two specs differ. */
export function specMismatch(base: VmSpec, requested: VmSpec): string[] {
  return BOOT_RELEVANT_FIELDS.filter((f) => !isDeepStrictEqual(base[f], requested[f]));
}

/**
 * The composer (Kata's `factory.GetVM`): takes a paused VM from any base strategy and makes it the machine the
 * caller asked for. If the base boots VMs differently from the request, it boots one directly instead, logs a
 * warning naming the fields, and counts it (Kata did this silently). Then it resumes the VM, reseeds the guest
 * RNG (a cached or cloned guest shares its entropy state with its siblings), sets the guest clock (it stood
 * still while paused) and grows vCPUs and memory up to the request (never shrinks).
 */
export class VmFactory {
  readonly #base: FactoryBase;
  readonly #deps: VmDeps;
  readonly #metrics: FactoryMetrics;

  constructor(base: FactoryBase, deps: VmDeps & { metrics?: FactoryMetrics }) {
    this.#base = base;
    this.#deps = deps;
    this.#metrics = deps.metrics ?? nullMetrics;
  }

  /** The base strategy's configuration. */
  config(): VmSpec {
    return this.#base.config();
  }

  /** A running, reseeded, clock-synced VM at least as large as `requested`. */
  async getVM(requested: VmSpec, signal?: AbortSignal): Promise<ObtainedVm> {
    const t0 = this.#deps.clock.monotonic();
    const mismatched = specMismatch(this.#base.config(), requested);
    let vm: Vm;
    if (mismatched.length > 0) {
      this.#deps.logger.warn(
        { fields: mismatched },
        'requested VM differs from the factory base in boot-relevant fields; booting directly',
      );
      this.#metrics.fallback(mismatched);
      vm = await new DirectFactory(requested, this.#deps).getBaseVM(signal);
    } else {
      // The shape goes along: a server of several pools serves it from that shape's pool (or a close one).
      vm = await this.#base.getBaseVM(signal, {
        shape: { cpus: requested.cpus, memoryMiB: requested.memoryMiB },
      });
    }
    const t1 = this.#deps.clock.monotonic();
    try {
      await vm.resume();
      // Pipelined: the agent answers in order, so both cost about one round trip.
      await Promise.all([
        vm.agent.request({ op: 'reseed', data: randomBytes(32).toString('hex') }),
        vm.agent.request({
          op: 'set-time',
          epochNs: (BigInt(this.#deps.clock.now()) * 1_000_000n).toString(),
        }),
      ]);
      await grow(vm, { cpus: requested.cpus, memoryMiB: requested.memoryMiB });
    } catch (err) {
      await vm.destroy();
      throw err;
    }
    const t2 = this.#deps.clock.monotonic();
    return {
      vm,
      source: mismatched.length > 0 ? 'fallback' : 'base',
      mismatched,
      timings: { acquireMs: t1 - t0, readyMs: t2 - t1, totalMs: t2 - t0 },
    };
  }

  /** Closes the base. */
  close(): Promise<void> {
    return this.#base.close();
  }
}
