/**
 * The reliability suite's fuzz section: bad input, property-based, seeded and reproducible. Each target is
 * real code from src/ run in-process (no VMs), fed at least `cases` generated inputs by fast-check with the
 * given seed; a case must be accepted or refused with a clear error (a VmcError with a stable code, an error
 * reply or status), never crash, create nothing, and leave the server serving. One row per target; a failing
 * row names the seed, fast-check's replay path and the (shrunk) counterexample.
 */
import { agentServerTarget } from './fuzz-agent.js';
import { agentClientTarget } from './fuzz-agent-client.js';
import { bundleTarget } from './fuzz-bundle.js';
import { cacheTarget } from './fuzz-cache.js';
import { type FuzzOptions, runTarget } from './fuzz-common.js';
import { configTarget } from './fuzz-config.js';
import { controlTarget } from './fuzz-control.js';
import type { ReliabilityRow } from './report.js';

/**
 * Time each row may take at most, per 1000 cases: about ten times what a run takes on a loaded 2-core
 * machine, so that only a hang (or a pathological slowdown) reaches it.
 */
const BUDGET_MS_PER_1000 = 60_000;

/** Runs every fuzz target in turn; one row each. */
export async function fuzzRows(opts: FuzzOptions): Promise<ReliabilityRow[]> {
  const budget = Math.max(10_000, (BUDGET_MS_PER_1000 * opts.cases) / 1000);
  const o = opts;
  return [
    await runTarget(o, 'config.json → readBundle', budget, () => bundleTarget(o)),
    await runTarget(o, 'configuration.toml → parseConfigText', budget, () => configTarget(o)),
    await runTarget(o, 'agent frames → AgentServer', budget, () => agentServerTarget(o)),
    await runTarget(o, 'guest frames → AgentClient', budget, () => agentClientTarget(o)),
    await runTarget(o, 'control frames → ControlServer', budget, () => controlTarget(o)),
    await runTarget(o, 'gRPC requests → CacheServer', budget, () => cacheTarget(o)),
  ];
}
