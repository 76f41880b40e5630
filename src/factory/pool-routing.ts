/**
 * Which pool serves a request (issue 15): its exact shape's pool when that has a ready VM, otherwise the fastest
 * measured way among a smaller shape grown by hot-plug, a larger shape as it is, and a cold boot. The costs are
 * inputs (moving averages of what the server measures), so the choice follows the host: under TCG a hot-plug of
 * +1 vCPU and +256 MiB costs ~0.8 s on top of a ~0.3 s hand-out and a cold boot ~8.4 s (README, Performance);
 * under KVM the ratios differ and so may the choice.
 */

/** A VM shape: what a request asks for and what a pool keeps. */
export interface Shape {
  cpus: number;
  memoryMiB: number;
}

/** A pool as the router sees it at the moment of the request. */
export interface PoolView {
  id: string;
  shape: Shape;
  /** VMs ready to hand out now. */
  ready: number;
  /** Hot-plug headroom of the pool's VMs; without it growth is assumed possible. */
  maxCpus?: number;
  maxMemoryMiB?: number;
  /** This pool's measured hand-out time if it differs from the global one (template clones, say), ms. */
  handoutMs?: number;
}

/** Measured costs, ms. */
export interface RouteCosts {
  /** Taking a ready VM: resume, reseed, clock (bench "getVM from the cache": 303 ms p50). */
  handoutMs: number;
  /** Hot-plugging one vCPU and bringing it online. */
  growPerCpuMs: number;
  /** Hot-plugging 256 MiB (memory grows in these steps). */
  growPer256MiBMs: number;
  /** A cold boot to a ready agent (bench: 8376 ms p50). */
  coldBootMs: number;
}

/**
 * Defaults from the README's bench (TCG, 2 cores): getVM 303 ms; getVM grown by +1 vCPU and +256 MiB 1110 ms,
 * so 807 ms of growth. The bench measures only that sum; it is split 600/207 because onlining a vCPU is the
 * slow part (README: "a hot-added vCPU takes about 1 s to come online under TCG") and memory is a single
 * device_add. Replace them with measurements as they come.
 */
export const ROUTE_COST_DEFAULTS: RouteCosts = {
  handoutMs: 303,
  growPerCpuMs: 600,
  growPer256MiBMs: 207,
  coldBootMs: 8376,
};

/** Router tuning. */
export interface RouteOptions {
  /**
   * A pool's VM may exceed the request by at most this factor in each of vCPUs and memory. 2: a VM twice the
   * size still bills the host less than a cold boot's wait costs the client, and beyond that one small request
   * would empty a large shape's pool that large requests need (and they cannot be served by shrinking).
   */
  maxWaste: number;
}

export const ROUTE_DEFAULTS: RouteOptions = { maxWaste: 2 };

/** The router's answer: a pool (and how) or a cold boot, with the estimate and the reason for logs/metrics. */
export type Route =
  | {
      kind: 'exact' | 'grow' | 'larger';
      pool: string;
      /** What to hot-plug into the VM taken (0 and 0 unless `grow`). */
      addCpus: number;
      addMemoryMiB: number;
      costMs: number;
      reason: string;
    }
  | { kind: 'cold'; costMs: number; reason: string };

const MEM_STEP_MIB = 256;
const KIND_RANK = { exact: 0, larger: 1, grow: 2 } as const;

interface Candidate {
  kind: keyof typeof KIND_RANK;
  costMs: number;
  /** Memory given beyond the request, MiB. */
  waste: number;
  ready: number;
  id: string;
}

/** Order of candidates: exact first whenever it has a VM, then cost, kind, less waste, more ready, id. */
function before(
  a: Candidate,
  b: { kind: Candidate['kind']; costMs: number; pool: string },
  bWaste: number,
  bReady: number,
): boolean {
  if ((a.kind === 'exact') !== (b.kind === 'exact')) return a.kind === 'exact';
  if (a.costMs !== b.costMs) return a.costMs < b.costMs;
  if (a.kind !== b.kind) return KIND_RANK[a.kind] < KIND_RANK[b.kind];
  if (a.waste !== bWaste) return a.waste < bWaste;
  if (a.ready !== bReady) return a.ready > bReady;
  return a.id < b.pool;
}

const fmtShape = (s: Shape) => `${s.cpus} vCPU/${s.memoryMiB} MiB`;

/** Picks how to serve a request of shape `want` (see the file's comment). Deterministic for equal inputs. */
export function route(
  want: Shape,
  pools: readonly PoolView[],
  costs: RouteCosts,
  opts: RouteOptions = ROUTE_DEFAULTS,
): Route {
  let best: Extract<Route, { pool: string }> | null = null;
  let bestWaste = 0;
  let bestReady = 0;
  for (const p of pools) {
    if (p.ready <= 0) continue;
    const s = p.shape;
    if (s.cpus > want.cpus * opts.maxWaste || s.memoryMiB > want.memoryMiB * opts.maxWaste) continue;
    const addCpus = Math.max(0, want.cpus - s.cpus);
    const addMemoryMiB = Math.max(0, want.memoryMiB - s.memoryMiB);
    if (p.maxCpus !== undefined && s.cpus + addCpus > p.maxCpus) continue;
    if (p.maxMemoryMiB !== undefined && s.memoryMiB + addMemoryMiB > p.maxMemoryMiB) continue;
    const kind =
      addCpus > 0 || addMemoryMiB > 0
        ? 'grow'
        : s.cpus === want.cpus && s.memoryMiB === want.memoryMiB
          ? 'exact'
          : 'larger';
    const costMs =
      (p.handoutMs ?? costs.handoutMs) +
      addCpus * costs.growPerCpuMs +
      Math.ceil(addMemoryMiB / MEM_STEP_MIB) * costs.growPer256MiBMs;
    const waste = s.memoryMiB + addMemoryMiB - want.memoryMiB;
    const better =
      !best || before({ kind, costMs, waste, ready: p.ready, id: p.id }, best, bestWaste, bestReady);
    if (!better) continue;
    const how =
      kind === 'exact'
        ? `exact shape ${fmtShape(s)} (${p.ready} ready)`
        : kind === 'larger'
          ? `larger shape ${fmtShape(s)} as is (${p.ready} ready)`
          : `shape ${fmtShape(s)} grown by +${addCpus} vCPU +${addMemoryMiB} MiB (${p.ready} ready)`;
    best = { kind, pool: p.id, addCpus, addMemoryMiB, costMs, reason: how };
    bestWaste = waste;
    bestReady = p.ready;
  }
  const want_ = fmtShape(want);
  if (best && (best.kind === 'exact' || best.costMs <= costs.coldBootMs)) {
    const vs =
      best.kind === 'exact'
        ? ''
        : `: ~${Math.round(best.costMs)} ms vs cold boot ~${Math.round(costs.coldBootMs)} ms`;
    return { ...best, reason: `${want_}: ${best.reason}${vs}` };
  }
  return {
    kind: 'cold',
    costMs: costs.coldBootMs,
    reason: best
      ? `${want_}: cold boot ~${Math.round(costs.coldBootMs)} ms beats ${best.reason} ~${Math.round(best.costMs)} ms`
      : `${want_}: no pool within ×${opts.maxWaste} has a ready VM`,
  };
}
