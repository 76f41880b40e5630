import type { MissPolicy } from '../config/schema.js';
import { isVmcError } from '../errors.js';
import type { ObtainedVm } from '../factory/factory.js';
import { selectFactory } from '../factory/select.js';
import { PhaseRecorder } from '../platform/phases.js';
import { signalExitCode } from '../platform/signals.js';
import { relayStdin } from '../platform/streams.js';
import { requestFigures } from '../protocol/agent/figures.js';
import { sweepOrphans } from '../vm/sweep.js';
import type { Vm } from '../vm/vm.js';
import { hostVmSpec } from './common.js';
import type { CliContext } from './context.js';
import { exitNow, type VerbResult } from './exit.js';
import { writePhases } from './phases-file.js';

/** Options of `vm run`. */
interface VmRunOptions {
  cpus?: number;
  memory?: number;
  timings?: boolean;
  /** commander's negation of --no-cache */
  cache?: boolean;
  verbose?: boolean;
  /** What the cache server does when it has no VM ready (absent: its `[cache] miss_policy`). */
  missPolicy?: MissPolicy;
}

/**
 * `vmcache vm run -- CMD...`: boots a VM, runs CMD with stdio attached, destroys the VM and returns CMD's exit
 * status (128 + signal number when it was killed). SIGINT/SIGTERM destroy the VM, and then this process exits
 * at once with 128 + that signal's number.
 */
export async function vmRun(ctx: CliContext, argv: string[], opts: VmRunOptions): Promise<VerbResult> {
  // Phases from this process's start (performance.now() is 0 at its time origin), for VMCACHE_PHASES.
  const rec = new PhaseRecorder(ctx.clock, 0);
  rec.lap('CLI start-up (Node, bundle load, options)');
  const spec = hostVmSpec(ctx);
  if (opts.cpus) {
    spec.cpus = opts.cpus;
    spec.maxCpus = Math.max(spec.maxCpus, opts.cpus);
  }
  if (opts.memory) {
    spec.memoryMiB = opts.memory;
    spec.maxMemoryMiB = Math.max(spec.maxMemoryMiB, opts.memory);
  }
  await sweepOrphans(ctx);
  rec.lap('sweep orphans');
  const t0 = ctx.clock.monotonic();
  let vm: Vm | null = null;
  let interrupted: NodeJS.Signals | null = null;
  let onInterrupt: () => void = () => {};
  const interruption = new Promise<null>((resolve) => {
    onInterrupt = () => resolve(null);
  });
  /** `p`, or null as soon as a signal came; `p` is abandoned then (its rejection is no unhandled one). */
  const untilInterrupted = <T>(p: Promise<T>): Promise<T | null> => {
    p.catch(() => undefined);
    return Promise.race([p, interruption]);
  };
  /** Once the command runs, a signal ends the run: the command may still hold stdio and the agent connection. */
  const destroyAndExit = async (v: Vm) => {
    await v.destroy().catch(() => undefined);
    return exitNow(signalExitCode(interrupted!));
  };
  const abort = new AbortController();
  const onSignal = (sig: NodeJS.Signals) => {
    if (interrupted) return;
    interrupted = sig;
    ctx.say(`vmcache: ${sig}: destroying the VM`);
    // During boot the abort unwinds the half-booted VM; once it runs, the race below destroys it.
    abort.abort();
    onInterrupt();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    const { factory, kind } = await selectFactory(ctx.config, spec, ctx, opts.cache !== false, {
      missPolicy: opts.missPolicy,
    });
    rec.lap('connect to the factory');
    let got: ObtainedVm;
    try {
      got = await factory.getVM(spec, abort.signal, { trace: rec });
    } finally {
      await factory.close();
    }
    rec.lap('close the factory client');
    vm = got.vm;
    if (interrupted) {
      await vm.destroy();
      return signalExitCode(interrupted);
    }
    if (opts.verbose) {
      const how =
        got.source === 'fallback'
          ? `cold boot (config differs from the factory base in ${got.mismatched.join(', ')})`
          : kind === 'cache'
            ? 'from the VM cache'
            : kind === 'template'
              ? 'cloned from the VM template'
              : 'cold boot';
      ctx.say(
        `vm: ${vm.id} ${how}, ready in ${Math.round(got.timings.totalMs)} ms (acquire ${Math.round(got.timings.acquireMs)} ms, resume+reseed+clock ${Math.round(got.timings.readyMs)} ms)`,
      );
    }
    const tBoot = ctx.clock.monotonic();
    // Without a terminal, stdin is forwarded; on a terminal it is not (no pty support yet), so a command that
    // reads stdin sees EOF instead of hanging.
    const forwardStdin = !process.stdin.isTTY;
    const proc = await untilInterrupted(
      vm.exec({
        args: argv,
        stdin: forwardStdin,
        env: ['PATH=/usr/sbin:/usr/bin:/sbin:/bin', 'HOME=/root', 'TERM=xterm'],
      }),
    );
    if (!proc) return await destroyAndExit(vm);
    rec.lap('exec of the command');
    if (proc.startTrace) requestFigures(rec, 'exec of the command', proc.startTrace);
    proc.stdout.pipe(process.stdout, { end: false });
    proc.stderr.pipe(process.stderr, { end: false });
    if (forwardStdin) relayStdin(process.stdin, proc);
    const status = await untilInterrupted(proc.wait());
    if (!status) return await destroyAndExit(vm);
    process.stdin.destroy();
    const tExec = ctx.clock.monotonic();
    rec.lap('the command runs, its exit and output arrive');
    await vm.destroy();
    if (interrupted) return exitNow(signalExitCode(interrupted));
    const tEnd = ctx.clock.monotonic();
    rec.lap('destroy the VM');
    writePhases(ctx, 'vm run', rec.report());
    if (opts.timings) {
      ctx.say(
        `timings: vm ready ${Math.round(tBoot - t0)} ms, command ${Math.round(tExec - tBoot)} ms, destroy ${Math.round(tEnd - tExec)} ms, total ${Math.round(tEnd - t0)} ms`,
      );
    }
    return status.code ?? signalExitCode(status.signal ?? '');
  } catch (err) {
    await vm?.destroy().catch(() => undefined);
    if (interrupted && isVmcError(err, 'VMC_ERR_VM_INTERRUPTED')) return signalExitCode(interrupted);
    throw err;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}
