import { VmcError } from '../../errors.js';
import type { Clock } from '../../platform/clock.js';
import { CHURN_MAX_PASSES } from '../../protocol/agent/messages.js';
import { humanMonitor, type Qmp } from './qmp-commands.js';

/**
 * QEMU's TCG translation buffer (`-accel tcg,tb-size=`): guest code is translated once into it and the
 * translations reused until the buffer is full, when QEMU flushes all of them at once. A pooled VM's warm-up
 * (factory/direct.ts) runs the first container start's paths so that they are translated at the hand-off;
 * but a cold boot fills the 64 MiB buffer about twice, so the flush came at a point that depends on the boot.
 * Measured 2026-12-03 in handed-off VMs: the buffer held 4.7 to 66.8 MiB at the hand-off, with a flush during
 * or after the warm-up, and the first container start then re-translated 13–16 MiB (350–660 ms); in one whose
 * warm-up had followed a flush, it took 75 ms. Flushing right before the warm-up makes that the rule.
 */

/** What `info jit` says of the buffer. */
export interface TranslationStats {
  /** Bytes of host code in the buffer now. */
  usedBytes: number;
  /** The buffer's size. */
  sizeBytes: number;
  /** Flushes since QEMU started. */
  flushes: number;
}

/** Parses HMP `info jit` (QEMU 7.2: `gen code size 908307/67103744`, `TB flush count 2`). */
export function parseInfoJit(text: string): TranslationStats {
  const size = /gen code size\s+(\d+)\/(\d+)/.exec(text);
  const flushes = /TB flush count\s+(\d+)/.exec(text);
  if (!size || !flushes)
    throw new VmcError(
      'VMC_ERR_QMP_PROTOCOL',
      'HMP info jit did not report the translation buffer (not under TCG?)',
    );
  return { usedBytes: Number(size[1]), sizeBytes: Number(size[2]), flushes: Number(flushes[1]) };
}

/** The translation buffer's state, from HMP `info jit`. */
export async function translationStats(qmp: Qmp): Promise<TranslationStats> {
  return parseInfoJit(await humanMonitor(qmp, 'info jit'));
}

/** Most `churn` requests one flush may take (each sized from the last one's yield). */
const MAX_ROUNDS = 6;

/**
 * Makes QEMU flush the translation buffer of a running TCG guest; resolves with the churn passes it took.
 * QEMU 7.2 has no command that flushes it (QMP, HMP and the gdbstub's single-step all leave it: tried), so the
 * guest fills it: `churn(passes)` runs fresh machine code in the guest (the agent's `churn` request), and each
 * round asks for as many passes as the room left needs at the yield of the round before, until `info jit`
 * counts one more flush. About 40 passes of 1.5 MiB, ~1 s under TCG, off the critical path (a pool's fill).
 */
export async function flushTranslations(
  qmp: Qmp,
  churn: (passes: number) => Promise<void>,
  clock: Clock,
  opts: { deadlineMs?: number; maxPasses?: number } = {},
): Promise<number> {
  const deadline = clock.monotonic() + (opts.deadlineMs ?? 15_000);
  const maxPasses = opts.maxPasses ?? CHURN_MAX_PASSES;
  const start = await translationStats(qmp);
  let last = start;
  let passes = 1; // the first round measures the yield of a pass
  let total = 0;
  for (let round = 0; round < MAX_ROUNDS; round++) {
    if (clock.monotonic() > deadline) break;
    await churn(passes);
    total += passes;
    const now = await translationStats(qmp);
    if (now.flushes > start.flushes) return total;
    const perPass = (now.usedBytes - last.usedBytes) / passes;
    // Just enough for the room left (the next round tops up by a pass): what a pass writes after the flush
    // stays in the buffer. A pass that added nothing measurable: try the most.
    passes = perPass > 0 ? Math.ceil((now.sizeBytes - now.usedBytes) / perPass) : maxPasses;
    passes = Math.min(Math.max(passes, 1), maxPasses);
    last = now;
  }
  throw new VmcError(
    'VMC_ERR_INVALID_STATE',
    `the translation buffer did not flush after ${total} churn passes (${last.usedBytes} of ${last.sizeBytes} bytes used)`,
  );
}
