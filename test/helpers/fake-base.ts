import { defaultVmSpec } from '../../src/config/defaults.js';
import { VmcError } from '../../src/errors.js';
import type { FactoryBase } from '../../src/factory/base.js';
import type { VmSpec } from '../../src/hypervisor/types.js';
import type { Vm } from '../../src/vm/vm.js';
import type { ManualClock } from './manual-clock.js';

/** A VM stand-in: just what the pool looks at. */
export class FakeVm {
  alive_ = true;
  destroyed = false;
  /** Whether the agent answers after resume (the readiness gate's question). */
  agentAnswers = true;
  readonly gate: string[] = [];
  readonly record;
  constructor(
    readonly id: string,
    createdAt: number,
    spec: VmSpec = defaultVmSpec('/img', 'tcg'),
  ) {
    this.record = { id, qemu: { pid: 1, startTime: 1 }, spec, createdAt };
  }
  readonly qmp = { execute: async () => ({ status: this.alive_ ? 'paused' : 'dead' }) };
  alive() {
    return this.alive_;
  }
  async resume() {
    this.gate.push('resume');
    if (!this.agentAnswers) throw new VmcError('VMC_ERR_AGENT_TIMEOUT', 'guest agent not ready');
  }
  async park() {
    this.gate.push('park');
  }
  async destroy() {
    this.destroyed = true;
    this.alive_ = false;
  }
}

/**
 * A base whose boots take `bootMs` of the manual clock and fail while `failing` is true. It counts the boots in
 * flight at every moment and keeps the peak, so a parallelism bound is checked over a whole run, not sampled.
 * Like a real boot past its spawn, a boot here finishes even when the pool aborts it.
 */
export class FakeBase implements FactoryBase {
  boots = 0;
  inFlight = 0;
  peak = 0;
  failing = false;
  /** Boots whose VM's agent will not answer (1-based boot numbers). */
  readonly silent = new Set<number>();
  readonly made: FakeVm[] = [];
  readonly spec: VmSpec;
  /** Prefix of the VMs' ids: `<cpus>x<MiB>-` for a base of a given shape, so tests see which pool served. */
  readonly #prefix: string;
  constructor(
    readonly clock: ManualClock,
    readonly bootMs = 5,
    shape?: { cpus: number; memoryMiB: number },
  ) {
    this.spec = { ...defaultVmSpec('/img', 'tcg'), ...shape };
    this.#prefix = shape ? `${shape.cpus}x${shape.memoryMiB}-` : '';
  }
  config() {
    return this.spec;
  }
  async getBaseVM(): Promise<Vm> {
    const n = ++this.boots;
    this.inFlight++;
    this.peak = Math.max(this.peak, this.inFlight);
    try {
      await this.clock.sleep(this.bootMs);
    } finally {
      this.inFlight--;
    }
    if (this.failing) throw new Error(`boot ${n} failed: bad kernel`);
    const vm = new FakeVm(`${this.#prefix}vm${n}`, this.clock.now(), this.spec);
    vm.agentAnswers = !this.silent.has(n);
    this.made.push(vm);
    return vm as unknown as Vm;
  }
  async close() {}
}
