import { messageOf } from '../errors.js';
import type { VmSpec } from '../hypervisor/types.js';
import { DEFAULT_TIMEOUTS, Vm, type VmDeps } from '../vm/vm.js';
import type { BaseVmRequest, FactoryBase } from './base.js';

/** Boots a fresh VM for every request and hands it over paused and parked (Kata's `direct` factory). */
export class DirectFactory implements FactoryBase {
  readonly #spec: VmSpec;
  readonly #deps: VmDeps;
  readonly #agentTimeoutMs: number;
  readonly #warm: boolean;

  /**
   * `warm`: ready each VM for a fast first container start before parking it (mount the share, run the start
   * paths once). Worth it for a pool, where it happens off the critical path; a one-off boot skips it.
   */
  constructor(spec: VmSpec, deps: VmDeps, opts: { agentTimeoutMs?: number; warm?: boolean } = {}) {
    this.#spec = spec;
    this.#deps = deps;
    this.#agentTimeoutMs = opts.agentTimeoutMs ?? DEFAULT_TIMEOUTS.agentReadyMs;
    this.#warm = opts.warm ?? false;
  }

  config(): VmSpec {
    return this.#spec;
  }

  /** `want.trace` gets the boot's laps (`boot: ...`) and one for the warm-up (if any) and park. */
  async getBaseVM(signal?: AbortSignal, want?: BaseVmRequest): Promise<Vm> {
    const vm = await Vm.boot(this.#spec, this.#deps, {
      signal,
      trace: want?.trace,
      timeouts: { ...DEFAULT_TIMEOUTS, agentReadyMs: this.#agentTimeoutMs },
    });
    try {
      // A VM from this factory runs one sandbox: mount its share now, and take the container start path and
      // a whole exec (request, output, exit) once, so that the first start after the hand-off finds the guest
      // agent's code compiled (the guest's Node keeps bytecode: --no-flush-bytecode). A template must not mount.
      if (this.#warm) {
        // Under TCG, the warm-up's translations must still be there at the hand-off: a cold boot fills the
        // translation buffer about twice, and its flush fell during or after the warm-up (measured, 3 of 3).
        await vm.flushTranslations().then(
          (passes) => passes > 0 && want?.trace?.lap('boot: flush the translation buffer'),
          (err) =>
            this.#deps.logger.warn(
              { vmId: vm.id, err: messageOf(err) },
              'the translation buffer could not be flushed before the warm-up: its first container start may be slower',
            ),
        );
        await vm.agent.request({ op: 'warm', share: true }, 30_000);
        await vm.run(['/bin/true']);
      }
      await vm.park();
      want?.trace?.lap(this.#warm ? 'boot: warm-up and park' : 'boot: park');
      return vm;
    } catch (err) {
      await vm.destroy();
      throw err;
    }
  }

  async close(): Promise<void> {}
}
