import { appendFileSync } from 'node:fs';
import { messageOf } from '../errors.js';
import type { PhaseReport } from '../platform/phases.js';
import type { CliContext } from './context.js';

/**
 * Appends one verb's phase breakdown to the `VMCACHE_PHASES` file as a JSON line (`{verb, ...report}`); does
 * nothing when it is unset. A write that fails is logged, never fatal: the breakdown is for measurements only.
 */
export function writePhases(ctx: CliContext, verb: string, report: PhaseReport): void {
  if (!ctx.phasesFile) return;
  try {
    appendFileSync(ctx.phasesFile, `${JSON.stringify({ verb, ...report })}\n`);
  } catch (err) {
    ctx.logger.warn({ file: ctx.phasesFile, err: messageOf(err) }, 'could not write the phase breakdown');
  }
}
