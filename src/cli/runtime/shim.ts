import { isVmcError, messageOf } from '../../errors.js';
import type { PhaseRecorder } from '../../platform/phases.js';
import { createShim, type Shim } from '../../sandbox/shim.js';
import { hostVmSpec } from '../common.js';
import { exitLike, type VerbResult } from '../exit.js';
import type { RuntimeContext } from './common.js';
import { REPORT_FD, type Report, sendReport } from './detached.js';

/** Signals the host-side process passes on to the container's process (the pid stands for the container). */
export const RELAYED_SIGNALS: NodeJS.Signals[] = [
  'SIGTERM',
  'SIGINT',
  'SIGHUP',
  'SIGQUIT',
  'SIGUSR1',
  'SIGUSR2',
  'SIGWINCH',
];

/** Forwards relayed signals to the shim once it exists; a signal before that aborts the creation. */
export function relaySignals(abort: AbortController): { attach(shim: Shim): void } {
  let target: Shim | null = null;
  for (const sig of RELAYED_SIGNALS) {
    process.on(sig, () => {
      if (!target) {
        if (sig !== 'SIGWINCH') abort.abort();
        return;
      }
      // On a terminal a window change is a resize (the guest's pty signals its own foreground group).
      if (sig === 'SIGWINCH' && process.stdout.isTTY) return;
      void target.kill(sig).catch(() => undefined);
    });
  }
  return {
    attach(shim) {
      target = shim;
    },
  };
}

/**
 * Creates the container in this process, which then stands for it: a relayed signal during the creation
 * undoes it; afterwards relayed signals go to the container's process.
 */
export async function createRelayed(ctx: RuntimeContext, id: string, trace?: PhaseRecorder): Promise<Shim> {
  const abort = new AbortController();
  const signals = relaySignals(abort);
  const shim = await createShim(id, hostVmSpec(ctx), ctx, { useCache: true, signal: abort.signal, trace });
  signals.attach(shim);
  return shim;
}

/**
 * `vmcache shim ID` (internal; started by `create`): creates the container, reports on fd 3, serves it until
 * its process has stopped, then exits as that process did.
 */
export async function shimMain(ctx: RuntimeContext, id: string): Promise<VerbResult> {
  const report = (r: Report) => sendReport(REPORT_FD, r);
  let shim: Shim;
  try {
    shim = await createRelayed(ctx, id);
  } catch (err) {
    ctx.logger.error({ id }, messageOf(err));
    report({
      ok: false,
      code: isVmcError(err) ? err.code : 'VMC_ERR_CONTAINER_START',
      message: messageOf(err),
    });
    return 1;
  }
  report({ ok: true });
  return exitLike(await shim.stopped);
}
