/**
 * Scale-out simulation of the VM pools (issue 15): no VMs, only the measured times. N nodes behind a
 * Kubernetes-like scheduler (random two choices on running sandboxes), each node with its own pools, one seeded
 * demand trace replayed against three layouts in the same memory budget per node, all served through the same
 * router (src/factory/pool-routing.ts): Kata's fixed single pool of the default shape (`vm_cache_number`); that
 * pool sized by the demand rule (src/factory/pool-sizing.ts), to see the rule alone; a pool per shape, each
 * sized by the rule, sharing the budget (`shareBudget`). Time is an event loop of its own: no real timers.
 *
 *   npm run build && node dist/bench/simulate-pools.js [--nodes 10,100,1000] [--seed 1] [--out FILE]
 *
 * Not a step of `npm run bench` (bench/run.ts is one script that needs a guest image and boots VMs); this runs
 * on its own in seconds. Every input below is a flag (--boot-ms 8376 ...); the defaults are the README's bench
 * (TCG, 2 cores). The trace: per node, Poisson single requests at `rate-per-min` plus Poisson bursts of 5
 * requests of one shape at `bursts-per-hour`, both × 4 during the first 15 min of every hour and × 0.5 after;
 * shapes 60 % 1 vCPU/512 MiB, 30 % 2/768, 10 % 2/1024. A hit is a request served from a ready VM (exact,
 * larger or grown); its wait is the router's measured cost. A miss waits for a boot of its shape that goes ahead
 * of the refills (or a refill of its shape that ends first). Idle memory is the time-average of the ready VMs'
 * configured memory. Output: a table, and JSON in bench/results/simulate-pools.json (or --out).
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { parseArgs } from 'node:util';
import { type PoolView, type RouteCosts, route, type Shape } from '../src/factory/pool-routing.js';
import { DemandSizer, shareBudget } from '../src/factory/pool-sizing.js';
import type { Clock } from '../src/platform/clock.js';
import { summarize } from './stats.js';

const { values: a } = parseArgs({
  options: {
    nodes: { type: 'string', default: '10,100,1000' },
    seed: { type: 'string', default: '1' },
    out: { type: 'string' },
    hours: { type: 'string', default: '2' }, // measured, after the warm-up
    'warmup-hours': { type: 'string', default: '1' },
    'boot-ms': { type: 'string', default: '8376' }, // cold boot to agent-ready, p50
    'handout-ms': { type: 'string', default: '303' }, // getVM from the cache, p50
    'grow-cpu-ms': { type: 'string', default: '600' }, // of the 807 ms that +1 vCPU +256 MiB adds (see pool-routing.ts)
    'grow-256-ms': { type: 'string', default: '207' },
    'boot-lanes': { type: 'string', default: '2' }, // boots at once per node (maxParallelBoots; 2 cores)
    'budget-mib': { type: 'string', default: '3072' }, // per node: 6 VMs of the default 512 MiB shape
    'rate-per-min': { type: 'string', default: '1' }, // single requests per node per minute (base)
    'bursts-per-hour': { type: 'string', default: '6' }, // bursts of 5 per node per hour (base)
    'burst-size': { type: 'string', default: '5' },
    'peak-factor': { type: 'string', default: '4' }, // both rates × this during the peak ...
    'peak-minutes': { type: 'string', default: '15' }, // ... the first 15 min of every hour
    'quiet-factor': { type: 'string', default: '0.5' }, // and × this the rest of the hour
    'lifetime-s': { type: 'string', default: '300' }, // mean sandbox lifetime (the scheduler's load)
    'tick-s': { type: 'string', default: '10' }, // each node re-reads its targets this often (health tick)
  },
});
const num = (k: keyof typeof a) => Number(a[k]);
const H = 3_600_000;
const P = {
  seed: num('seed'),
  measureMs: num('hours') * H,
  warmupMs: num('warmup-hours') * H,
  bootMs: num('boot-ms'),
  lanes: num('boot-lanes'),
  budgetMiB: num('budget-mib'),
  ratePerMs: num('rate-per-min') / 60_000,
  burstsPerMs: num('bursts-per-hour') / H,
  burstSize: num('burst-size'),
  peakFactor: num('peak-factor'),
  peakMs: num('peak-minutes') * 60_000,
  quietFactor: num('quiet-factor'),
  lifetimeMs: num('lifetime-s') * 1000,
  tickMs: num('tick-s') * 1000,
};
const costs: RouteCosts = {
  handoutMs: num('handout-ms'),
  growPerCpuMs: num('grow-cpu-ms'),
  growPer256MiBMs: num('grow-256-ms'),
  coldBootMs: P.bootMs,
};
/** The shapes asked for, and how often: the default shape, +1 vCPU +256 MiB (the bench's growth), a larger one. */
const SHAPES: { shape: Shape; weight: number }[] = [
  { shape: { cpus: 1, memoryMiB: 512 }, weight: 0.6 },
  { shape: { cpus: 2, memoryMiB: 768 }, weight: 0.3 },
  { shape: { cpus: 2, memoryMiB: 1024 }, weight: 0.1 },
];

/** mulberry32: small, fast, seeded. */
function seeded(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
const expo = (r: () => number, mean: number) => -Math.log(1 - r()) * mean;

/** A binary heap of events by time, then insertion order (so equal times replay identically). */
class EventQueue<T> {
  readonly #h: { at: number; seq: number; ev: T }[] = [];
  #seq = 0;
  get size(): number {
    return this.#h.length;
  }
  push(at: number, ev: T): void {
    const h = this.#h;
    h.push({ at, seq: this.#seq++, ev });
    let i = h.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!this.#less(i, p)) break;
      [h[i], h[p]] = [h[p]!, h[i]!];
      i = p;
    }
  }
  pop(): { at: number; ev: T } {
    const h = this.#h;
    const top = h[0]!;
    const last = h.pop()!;
    if (h.length > 0) {
      h[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < h.length && this.#less(l, m)) m = l;
        if (r < h.length && this.#less(r, m)) m = r;
        if (m === i) break;
        [h[i], h[m]] = [h[m]!, h[i]!];
        i = m;
      }
    }
    return top;
  }
  #less(i: number, j: number): boolean {
    const x = this.#h[i]!;
    const y = this.#h[j]!;
    return x.at < y.at || (x.at === y.at && x.seq < y.seq);
  }
}

/** The demand trace: requests with their shape and sandbox lifetime, the same for every policy. */
interface Request {
  at: number;
  shape: number;
  lifetimeMs: number;
}

/** Base rates × the hour's phase: a peak at the start of every hour, quiet after it. */
const phase = (t: number) => (t % H < P.peakMs ? P.peakFactor : P.quietFactor);

function makeTrace(nodes: number, rand: () => number): Request[] {
  const end = P.warmupMs + P.measureMs;
  const pick = () => {
    let x = rand();
    for (let i = 0; i < SHAPES.length; i++) {
      x -= SHAPES[i]!.weight;
      if (x < 0) return i;
    }
    return SHAPES.length - 1;
  };
  const out: Request[] = [];
  // Poisson by thinning: candidates at the peak rate, kept with probability rate(t) / peak rate
  const fmax = Math.max(P.peakFactor, P.quietFactor);
  for (const [perMs, size] of [
    [P.ratePerMs, 1],
    [P.burstsPerMs, P.burstSize],
  ] as const) {
    const lambda = nodes * perMs * fmax;
    if (!(lambda > 0)) continue;
    for (let t = expo(rand, 1 / lambda); t < end; t += expo(rand, 1 / lambda)) {
      if (rand() >= phase(t) / fmax) continue;
      const shape = pick(); // a burst is one job: 5 sandboxes of one shape at once
      for (let k = 0; k < size; k++) out.push({ at: t, shape, lifetimeMs: expo(rand, P.lifetimeMs) });
    }
  }
  return out.sort((x, y) => x.at - y.at);
}

/**
 * fixed: Kata's VMCache, one pool of the default shape holding the whole budget. demand-single: the same one
 * pool, sized by the demand rule (every request draws on it: other shapes grow from it), so the sizing rule is
 * compared alone. demand: a pool per shape, each sized by the rule, sharing the budget.
 */
type Policy = 'fixed' | 'demand-single' | 'demand';
const POLICIES: Policy[] = ['fixed', 'demand-single', 'demand'];

interface Pool {
  shape: number;
  ready: number;
  /** Refill boots queued or in flight for the pool (not the ones a waiting client asked for). */
  refilling: number;
  sizer: DemandSizer | null;
  fixed: number;
}

interface Boot {
  node: number;
  shape: number;
  forClient: boolean;
  queuedAt: number;
}

interface Node {
  pools: Pool[];
  running: number;
  lanesBusy: number;
  urgent: Boot[]; // boots a client waits for go first
  refills: Boot[];
  waiters: { at: number }[][]; // per shape, oldest first
  idleMiB: number;
  idleSince: number;
  idleArea: number; // MiB·ms of ready VMs over the measured window
}

type Ev =
  | { k: 'arrive'; req: Request }
  | { k: 'boot'; boot: Boot }
  | { k: 'tick'; node: number }
  | { k: 'end'; node: number };

interface Outcome {
  policy: Policy;
  nodes: number;
  requests: number;
  hitRate: number;
  exactRate: number;
  byRoute: Record<string, number>;
  waitMs: { p50: number; p99: number; mean: number };
  idleMiBPerNode: number;
  budgetMiBPerNode: number;
  boots: number;
  /** Hit rate during the peaks and the quiet times, and how many misses came in a peak's first 2 minutes. */
  hitRatePeak: number;
  hitRateQuiet: number;
  missesInPeakFirst2Min: number;
}

function simulate(policy: Policy, nodes: number, trace: Request[]): Outcome {
  let now = 0;
  const clock: Clock = {
    now: () => now,
    monotonic: () => now,
    sleep: () => Promise.reject(new Error('no sleeping in the simulation')),
    setTimeout: () => {
      throw new Error('no timers in the simulation');
    },
  };
  const mem = (s: number) => SHAPES[s]!.shape.memoryMiB;
  const sizer = (s: number) =>
    new DemandSizer({ min: 0, max: Math.floor(P.budgetMiB / mem(s)), initialRefillMs: P.bootMs }, clock);
  const newPools = (): Pool[] =>
    policy !== 'demand'
      ? [
          {
            shape: 0,
            ready: 0,
            refilling: 0,
            sizer: policy === 'fixed' ? null : sizer(0),
            fixed: Math.floor(P.budgetMiB / mem(0)),
          },
        ]
      : SHAPES.map((_, s) => ({
          shape: s,
          ready: 0,
          refilling: 0,
          fixed: 0,
          sizer: sizer(s),
        }));
  const ns: Node[] = Array.from({ length: nodes }, () => ({
    pools: newPools(),
    running: 0,
    lanesBusy: 0,
    urgent: [],
    refills: [],
    waiters: SHAPES.map(() => []),
    idleMiB: 0,
    idleSince: 0,
    idleArea: 0,
  }));
  const q = new EventQueue<Ev>();
  const sched = seeded(P.seed * 7919 + 17);
  const waits: number[] = [];
  const byRoute: Record<string, number> = { exact: 0, larger: 0, grow: 0, cold: 0 };
  let boots = 0;
  const peak = { n: 0, miss: 0 };
  const quiet = { n: 0, miss: 0 };
  let missFirst2Min = 0;
  const endAt = P.warmupMs + P.measureMs;
  const measuring = () => now >= P.warmupMs;

  const setIdle = (n: Node, delta: number) => {
    const from = Math.max(n.idleSince, P.warmupMs);
    if (now > from) n.idleArea += n.idleMiB * (now - from);
    n.idleSince = now;
    n.idleMiB += delta;
  };
  const startBoots = (id: number) => {
    const n = ns[id]!;
    while (n.lanesBusy < P.lanes) {
      const b = n.urgent.shift() ?? n.refills.shift();
      if (!b) return;
      n.lanesBusy++;
      boots++;
      q.push(now + P.bootMs, { k: 'boot', boot: b });
    }
  };
  /** Re-reads the targets and boots or evicts towards them. */
  const reconcile = (id: number) => {
    const n = ns[id]!;
    let targets: number[];
    if (policy === 'fixed') targets = n.pools.map((p) => p.fixed);
    else
      targets = shareBudget(
        n.pools.map((p) => ({ memoryMiB: mem(p.shape), min: p.sizer!.min, desired: p.sizer!.target() })),
        P.budgetMiB,
      );
    n.pools.forEach((p, i) => {
      const t = targets[i]!;
      for (; p.ready + p.refilling < t; p.refilling++)
        n.refills.push({ node: id, shape: p.shape, forClient: false, queuedAt: now });
      // over target: drop queued refills first, then evict ready VMs
      for (let j = n.refills.length - 1; j >= 0 && p.ready + p.refilling > t; j--)
        if (n.refills[j]!.shape === p.shape) {
          n.refills.splice(j, 1);
          p.refilling--;
        }
      const evict = Math.min(p.ready, p.ready + p.refilling - t);
      if (evict > 0) {
        p.ready -= evict;
        setIdle(n, -evict * mem(p.shape));
      }
    });
    startBoots(id);
  };

  const arrive = (req: Request) => {
    // the scheduler: two random nodes, the one with fewer running sandboxes (Kubernetes spreads this way)
    const x = Math.floor(sched() * nodes);
    const y = Math.floor(sched() * nodes);
    const id = ns[y]!.running < ns[x]!.running ? y : x;
    const n = ns[id]!;
    n.running++;
    q.push(now + req.lifetimeMs, { k: 'end', node: id });
    // demand is counted where it is meant to be served: its shape's pool, or the only pool
    const own = policy === 'demand' ? n.pools.find((p) => p.shape === req.shape) : n.pools[0];
    own?.sizer?.onArrival();
    const views: PoolView[] = n.pools.map((p, i) => ({
      id: String(i),
      shape: SHAPES[p.shape]!.shape,
      ready: p.ready,
    }));
    const r = route(SHAPES[req.shape]!.shape, views, costs);
    if (measuring()) {
      byRoute[r.kind]!++;
      const ph = phase(now) === P.peakFactor ? peak : quiet;
      ph.n++;
      if (r.kind === 'cold') ph.miss++;
      if (r.kind === 'cold' && now % H < 120_000) missFirst2Min++;
    }
    if (r.kind !== 'cold') {
      const p = n.pools[Number(r.pool)]!;
      p.ready--;
      setIdle(n, -mem(p.shape));
      if (measuring()) waits.push(r.costMs);
    } else {
      // a miss waits for its own boot, ahead of refills, or for a refill of its shape that ends first
      n.waiters[req.shape]!.push({ at: now });
      n.urgent.push({ node: id, shape: req.shape, forClient: true, queuedAt: now });
    }
    reconcile(id);
  };

  const booted = (b: Boot) => {
    const n = ns[b.node]!;
    n.lanesBusy--;
    const p = n.pools.find((x) => x.shape === b.shape);
    if (!b.forClient && p) {
      p.refilling--;
      p.sizer?.onRefill(now - b.queuedAt);
    }
    const w = n.waiters[b.shape]!.shift();
    if (w) {
      // a refill's VM is paused and needs the hand-out; the client's own boot is handed over running
      if (w.at >= P.warmupMs) waits.push(now - w.at + (b.forClient ? 0 : costs.handoutMs));
      if (!b.forClient) {
        // the client's own boot is no longer needed if it has not started
        const j = n.urgent.findIndex((u) => u.shape === b.shape);
        if (j >= 0) n.urgent.splice(j, 1);
      }
    } else if (p) {
      // nobody waits (a refill took the waiter's place): the VM goes to its pool
      p.ready++;
      setIdle(n, mem(p.shape));
    }
    reconcile(b.node);
  };

  for (const req of trace) q.push(req.at, { k: 'arrive', req });
  for (let i = 0; i < nodes; i++) {
    q.push((i / nodes) * P.tickMs, { k: 'tick', node: i });
    reconcile(i); // pools start filling at time 0
  }
  while (q.size > 0) {
    const { at, ev } = q.pop();
    if (at > endAt) break;
    now = at;
    if (ev.k === 'arrive') arrive(ev.req);
    else if (ev.k === 'boot') booted(ev.boot);
    else if (ev.k === 'end') ns[ev.node]!.running--;
    else {
      reconcile(ev.node);
      q.push(now + P.tickMs, ev);
    }
  }
  now = endAt;
  for (const n of ns) setIdle(n, 0);
  const measured = byRoute.exact! + byRoute.larger! + byRoute.grow! + byRoute.cold!;
  const s = summarize(waits.length > 0 ? waits : [0]);
  return {
    policy,
    nodes,
    requests: measured,
    hitRate: (measured - byRoute.cold!) / measured,
    exactRate: byRoute.exact! / measured,
    byRoute,
    waitMs: { p50: s.p50, p99: s.p99, mean: s.mean },
    idleMiBPerNode: ns.reduce((t, n) => t + n.idleArea, 0) / P.measureMs / nodes,
    budgetMiBPerNode: P.budgetMiB,
    boots,
    hitRatePeak: 1 - peak.miss / peak.n,
    hitRateQuiet: 1 - quiet.miss / quiet.n,
    missesInPeakFirst2Min: missFirst2Min,
  };
}

const started = performance.now();
const results: Outcome[] = [];
for (const nodes of a.nodes.split(',').map(Number)) {
  const trace = makeTrace(nodes, seeded(P.seed * 104729 + nodes));
  for (const policy of POLICIES) results.push(simulate(policy, nodes, trace));
}
const pct = (x: number) => `${(x * 100).toFixed(1)} %`;
const ms = (x: number) => (x >= 1000 ? `${(x / 1000).toFixed(2)} s` : `${Math.round(x)} ms`);
const fixedN = Math.floor(P.budgetMiB / SHAPES[0]!.shape.memoryMiB);
const LABEL: Record<Policy, string> = {
  fixed: `fixed: 1 pool × ${fixedN} of the default shape`,
  'demand-single': `by demand: 1 pool of the default shape, ≤ ${fixedN}`,
  demand: 'by demand: a pool per shape',
};
const lines = [
  '| nodes | pools | requests | hit rate (exact) | p50 wait | p99 wait | idle memory per node (MiB) |',
  '|---|---|---|---|---|---|---|',
  ...results.map(
    (r) =>
      `| ${r.nodes} | ${LABEL[r.policy]} | ${r.requests} | ${pct(r.hitRate)} (${pct(r.exactRate)}) | ${ms(r.waitMs.p50)} | ${ms(r.waitMs.p99)} | ${Math.round(r.idleMiBPerNode)} |`,
  ),
];
const repo = new URL('../../', import.meta.url).pathname; // dist/bench/ -> repository root
const out = a.out ?? join(repo, 'bench/results/simulate-pools.json');
mkdirSync(dirname(out), { recursive: true });
const doc = { date: new Date().toISOString(), params: P, costs, shapes: SHAPES, results };
writeFileSync(out, `${JSON.stringify(doc, null, 2)}\n`);
process.stdout.write(
  `pool simulation — budget ${P.budgetMiB} MiB per node, boot ${P.bootMs} ms × ${P.lanes} lanes, ` +
    `${a['rate-per-min']}/min + ${a['bursts-per-hour']} bursts of ${P.burstSize}/h per node ` +
    `(×${P.peakFactor} for ${a['peak-minutes']} min each hour, ×${P.quietFactor} after), ${a.hours} h after ${a['warmup-hours']} h warm-up, seed ${P.seed}\n\n` +
    `${lines.join('\n')}\n\nJSON: ${out} (${((performance.now() - started) / 1000).toFixed(1)} s)\n`,
);
