import { randomBytes } from 'node:crypto';
import { isDeepStrictEqual } from 'node:util';
import { BOOT_RELEVANT_FIELDS, type VmSpec } from '../hypervisor/types.js';
import { PhaseRecorder, type PhaseReport } from '../platform/phases.js';
import { requestFigures } from '../protocol/agent/figures.js';
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
  /**
   * Where the time went, finer: the host's phases in order (they add up to the getVM; from the remote cache
   * RPC, attach, AckVM, hand-out gate, then resume, reseed + set-time, grow) and the figures measured inside
   * them, the guest's on its own clock (see `VmFactory.getVM`).
   */
  phases: PhaseReport;
}

/** Options of one `getVM`. */
export interface GetVmOptions {
  /**
   * Lap the phases into this recorder (a caller's breakdown of a larger operation) instead of a new one. The
   * first phase runs from the recorder's last lap: lap right before calling. `phases` holds only getVM's.
   */
  trace?: PhaseRecorder;
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

  /**
   * A running, reseeded, clock-synced VM at least as large as `requested`. Its `phases`: whatever the base
   * laps (the remote cache does), `getBaseVM` (all of the base's call when it lapped nothing, else its rest),
   * `resume: ...` (QMP cont, and the agent's handshake for a VM not yet connected), `reseed + set-time`
   * (with the guest's handling of each) and `grow`. A few monotonic reads; no extra round trip.
   */
  async getVM(requested: VmSpec, signal?: AbortSignal, opts: GetVmOptions = {}): Promise<ObtainedVm> {
    const t0 = this.#deps.clock.monotonic();
    const rec = opts.trace ?? new PhaseRecorder(this.#deps.clock, t0);
    const mark = rec.mark();
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
        trace: rec,
      });
    }
    rec.lap(rec.mark().phases === mark.phases ? 'getBaseVM' : 'getBaseVM: rest');
    const t1 = this.#deps.clock.monotonic();
    try {
      await vm.resume(rec, 'resume');
      // Pipelined: the agent answers in order, so both cost about one round trip.
      const traces = await Promise.all([
        vm.agent.requestTraced({ op: 'reseed', data: randomBytes(32).toString('hex') }),
        vm.agent.requestTraced({
          op: 'set-time',
          epochNs: (BigInt(this.#deps.clock.now()) * 1_000_000n).toString(),
        }),
      ]);
      rec.lap('reseed + set-time');
      for (const t of traces) requestFigures(rec, 'reseed + set-time', t.trace);
      await grow(vm, { cpus: requested.cpus, memoryMiB: requested.memoryMiB });
      rec.lap('grow');
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
      phases: rec.report(mark),
    };
  }

  /** Closes the base. */
  close(): Promise<void> {
    return this.#base.close();
  }
}
