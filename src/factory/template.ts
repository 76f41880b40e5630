import { chmodSync, existsSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { isDeepStrictEqual } from 'node:util';
import { isVmcError, messageOf, VmcError } from '../errors.js';
import { saveState } from '../hypervisor/qemu/migration.js';
import { BOOT_RELEVANT_FIELDS, type VmSpec } from '../hypervisor/types.js';
import { mountsUnder } from '../platform/mounts.js';
import { withPidLock } from '../platform/pid-lock.js';
import { UndoStack } from '../platform/undo-stack.js';
import { Vm, type VmDeps } from '../vm/vm.js';
import type { BaseVmRequest, FactoryBase } from './base.js';

/** Files of a template directory. */
export function templateFiles(dir: string) {
  return { dir, memory: join(dir, 'memory'), state: join(dir, 'state'), meta: join(dir, 'template.json') };
}

/** What `template.json` records. */
export interface TemplateMeta {
  /** 2 since VMs have a spare NIC (protocol/spare-nic.ts): a clone's devices must be its template's. */
  version: 2;
  createdAt: number;
  spec: VmSpec;
  memoryBytes: number;
  stateBytes: number;
}

/** A template's state, for `factory status`. */
export type TemplateState = { exists: false } | { exists: true; meta: TemplateMeta; sizeBytes: number };

/** Fields a clone must share with its template exactly: the boot-relevant ones plus the boot shape (-m, -smp). */
const CLONE_FIELDS = [...BOOT_RELEVANT_FIELDS, 'cpus', 'memoryMiB'] as const;

/**
 * Reads and checks a template. Returns null when there is none; throws VMC_ERR_TEMPLATE_DAMAGED when files are
 * missing or truncated, or when `spec` differs from the spec the template was made with (a clone of a template
 * made with another CPU model or memory size hangs or fails to load: research §5).
 */
export function readTemplate(dir: string, spec?: VmSpec): TemplateMeta | null {
  const f = templateFiles(dir);
  if (!existsSync(f.meta) && !existsSync(f.memory) && !existsSync(f.state)) return null;
  const damaged = (why: string) =>
    new VmcError(
      'VMC_ERR_TEMPLATE_DAMAGED',
      `VM template in ${dir} is damaged (${why}); run 'vmcache factory destroy' and then 'vmcache factory init' to recreate it`,
    );
  let meta: TemplateMeta;
  try {
    meta = JSON.parse(readFileSync(f.meta, 'utf8')) as TemplateMeta;
  } catch {
    throw damaged('template.json missing or unreadable');
  }
  if ((meta.version as number) === 1)
    throw damaged('made by an older vmcache, whose VMs had no spare NIC: a clone of it would not load');
  if (meta.version !== 2 || !meta.spec) throw damaged('template.json has an unknown format');
  for (const [name, path, size] of [
    ['memory', f.memory, meta.memoryBytes],
    ['state', f.state, meta.stateBytes],
  ] as const) {
    if (!existsSync(path)) throw damaged(`${name} file missing`);
    if (statSync(path).size !== size)
      throw damaged(`${name} file is ${statSync(path).size} bytes, expected ${size}`);
  }
  if (spec) {
    const differ = CLONE_FIELDS.filter((k) => !isDeepStrictEqual(meta.spec[k], spec[k]));
    if (differ.length) {
      throw new VmcError(
        'VMC_ERR_TEMPLATE_DAMAGED',
        `VM template in ${dir} was made with another configuration (${differ.join(', ')}); run 'vmcache factory destroy' and then 'vmcache factory init' to recreate it`,
      );
    }
  }
  return meta;
}

/** Whether a template exists, and its size. Damaged templates are reported by `readTemplate`. */
export function templateState(dir: string): TemplateState {
  const meta = readTemplate(dir);
  if (!meta) return { exists: false };
  // Allocated bytes: the memory file is sparse (only pages the template touched take tmpfs space).
  const f = templateFiles(dir);
  return { exists: true, meta, sizeBytes: (statSync(f.memory).blocks + statSync(f.state).blocks) * 512 };
}

/**
 * VM templating (Kata's `template` factory): one VM is booted with its RAM in a file on a tmpfs, parked (its
 * agent waiting for the next owner), paused and saved with QEMU's `x-ignore-shared` migration capability (the
 * device state goes to `state`, RAM stays in `memory`). Every further VM is a clone: the same memory file mapped
 * private (copy-on-write, so clones share the template's pages) and the device state loaded over QMP. A clone
 * starts in a fraction of a boot and comes up paused and parked; the composer resumes it, reseeds its RNG (q35's
 * vmgenid also does) and sets its clock, so every clone becomes its own machine.
 *
 * Trade-off: clones share memory pages, a side channel between tenants (Kata cites CVE-2015-2877). Enable it
 * only where tenants trust each other, or accept the risk knowingly.
 */
export class TemplateFactory implements FactoryBase {
  readonly #spec: VmSpec;
  readonly #dir: string;
  readonly #deps: VmDeps;

  private constructor(spec: VmSpec, dir: string, deps: VmDeps) {
    this.#spec = spec;
    this.#dir = dir;
    this.#deps = deps;
  }

  /**
   * Uses the template in `dir`. `create`: `no` (it must exist), `strict` (`factory init`: made when missing, and
   * an existing one must match `spec`), `first-use` (a client, as Kata's runtime: made when missing). Creation
   * holds `<dir>.lock`, so clients starting at once make one template and the others wait for it; an existing
   * template is reused, never overwritten.
   */
  static async open(
    spec: VmSpec,
    dir: string,
    deps: VmDeps,
    opts: { create: 'no' | 'strict' | 'first-use' },
  ): Promise<{ factory: TemplateFactory; created: boolean }> {
    // Using a template (a client) is not strict: the composer compares the request with the template's own
    // spec and, on a mismatch, boots directly with a warning naming the fields.
    const strict = opts.create === 'strict' ? spec : undefined;
    let existing: ReturnType<typeof readTemplate>;
    try {
      existing = readTemplate(dir, strict);
    } catch (err) {
      // Half made: another process may be creating it right now. Under the lock, a template that still reads
      // as damaged is one (its creator died mid-way), and the error says how to recreate it.
      if (opts.create === 'no' || !isVmcError(err, 'VMC_ERR_TEMPLATE_DAMAGED')) throw err;
      existing = null;
    }
    if (existing) return { factory: new TemplateFactory(existing.spec, dir, deps), created: false };
    if (opts.create === 'no')
      throw new VmcError(
        'VMC_ERR_TEMPLATE_MISSING',
        `no VM template in ${dir}; create it with 'vmcache factory init'`,
      );
    return withPidLock(
      `${dir}.lock`,
      deps.clock,
      TEMPLATE_LOCK_WAIT_MS,
      async () => {
        // Made by the process that held the lock before this one.
        const made = readTemplate(dir, strict);
        if (made) return { factory: new TemplateFactory(made.spec, dir, deps), created: false };
        await createTemplate(spec, dir, deps);
        return { factory: new TemplateFactory(spec, dir, deps), created: true };
      },
      (owner) =>
        deps.logger.info({ dir, pid: owner.pid }, 'waiting for another process to create the VM template'),
    );
  }

  config(): VmSpec {
    return this.#spec;
  }

  /** A clone, paused and parked; `want.trace` gets the clone's start-up laps. */
  getBaseVM(signal?: AbortSignal, want?: BaseVmRequest): Promise<Vm> {
    const f = templateFiles(this.#dir);
    return Vm.boot(this.#spec, this.#deps, {
      signal,
      trace: want?.trace,
      qemu: { memoryFile: { path: f.memory, share: false }, incomingDefer: true },
      restoreFrom: f.state,
    });
  }

  async close(): Promise<void> {}
}

/** How long a client waits for another to create the template (a boot, a park and a save; minutes at most). */
const TEMPLATE_LOCK_WAIT_MS = 300_000;

/**
 * Creates the template: tmpfs, boot with shared file-backed RAM, park, save, stop. A failure leaves no mount
 * behind: the tmpfs this call mounted is unmounted again (with it go the partial memory and state files).
 */
export async function createTemplate(spec: VmSpec, dir: string, deps: VmDeps): Promise<TemplateMeta> {
  const f = templateFiles(dir);
  const undo = new UndoStack();
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    if (!mountsUnder(dir).includes(dir)) {
      // RAM-backed, as Kata does: the clones map this file, and a disk-backed file would page from disk.
      await deps.run(
        'mount',
        ['-t', 'tmpfs', '-o', `size=${spec.memoryMiB + 64}M,mode=0700`, 'vmcache-template', dir],
        { errorCode: 'VMC_ERR_TEMPLATE_FAILED' },
      );
      // QEMU's `exec:` migration `cat` can hold the state file open a moment after the VM stopped ("target
      // is busy"): then detach it lazily, so that the mount is gone at once and freed when the file closes.
      undo.push('unmount the template tmpfs', () =>
        deps.run('umount', [dir]).catch(() => deps.run('umount', ['-l', dir])),
      );
    }
    const vm = await Vm.boot(spec, deps, { qemu: { memoryFile: { path: f.memory, share: true } } });
    try {
      // The agent waits for its next owner before the snapshot (Kata slept 2 s and hoped; we wait for the event).
      await vm.park();
      await saveState(vm.qmp, f.state, deps.clock);
    } finally {
      await vm.destroy();
    }
    // Clones map the memory file private; it must never change again.
    chmodSync(f.memory, 0o400);
    chmodSync(f.state, 0o400);
    const meta: TemplateMeta = {
      version: 2,
      createdAt: deps.clock.now(),
      spec,
      memoryBytes: statSync(f.memory).size,
      stateBytes: statSync(f.state).size,
    };
    writeFileSync(f.meta, `${JSON.stringify(meta, null, 2)}\n`);
    undo.release();
    deps.logger.info(
      { dir, memoryBytes: meta.memoryBytes, stateBytes: meta.stateBytes },
      'VM template created',
    );
    return meta;
  } catch (err) {
    for (const { name, error } of await undo.unwind())
      deps.logger.warn(
        { dir, step: name, err: messageOf(error) },
        'could not undo a failed template creation',
      );
    throw err;
  }
}

/** Removes the template: unmounts its tmpfs and deletes the directory, leaving nothing mounted. */
export async function destroyTemplate(dir: string, deps: VmDeps): Promise<boolean> {
  if (!existsSync(dir)) return false;
  // Right after the last clone stops, the `cat` that QEMU spawned for `exec:` migration can still hold the
  // state file open for a moment ("target is busy"): retry for up to 5 s.
  const deadline = deps.clock.monotonic() + 5_000;
  while (mountsUnder(dir).length) {
    for (const m of mountsUnder(dir)) await deps.run('umount', [m]).catch(() => undefined);
    if (!mountsUnder(dir).length) break;
    if (deps.clock.monotonic() > deadline)
      throw new VmcError(
        'VMC_ERR_TEMPLATE_FAILED',
        `cannot unmount the template tmpfs ${dir} (still busy after 5 s)`,
      );
    await deps.clock.sleep(100);
  }
  rmSync(dir, { recursive: true, force: true });
  return true;
}
