/** Phase tables of `npm run bench`: the breakdowns of many runs of one row, as p50/p99 per phase and figure. */
import type { PhaseReport } from '../src/platform/phases.js';
import { summarize } from './stats.js';

/** One line of a phase table: a host phase (a lap) or a figure measured inside one, on the host's or guest's clock. */
export interface PhaseRow {
  /** `host`: a lap of the operation (laps add up to the total); `host figure`/`guest figure`: nested in `phase`. */
  kind: 'host' | 'host figure' | 'guest figure';
  phase: string;
  name: string;
  /** Runs that had it (a phase may appear only in some runs, e.g. a retry). */
  n: number;
  p50: number;
  p99: number;
}

/**
 * The table of `reports` (one per run): per host phase, then the figures inside it, p50 and p99 over the runs
 * (a name seen twice in one run, as after a retry, counts as their sum), in the order of first appearance;
 * last, the total.
 */
export function phaseTable(reports: PhaseReport[]): PhaseRow[] {
  const rows = new Map<string, { kind: PhaseRow['kind']; phase: string; name: string; values: number[] }>();
  const order: string[] = [];
  const put = (
    kind: PhaseRow['kind'],
    phase: string,
    name: string,
    perRun: Map<string, number>,
    ms: number,
  ) => {
    const key = `${kind}\u0000${phase}\u0000${name}`;
    if (!rows.has(key)) {
      rows.set(key, { kind, phase, name, values: [] });
      order.push(key);
    }
    perRun.set(key, (perRun.get(key) ?? 0) + ms);
  };
  for (const r of reports) {
    const perRun = new Map<string, number>();
    for (const p of r.phases) put('host', p.name, p.name, perRun, p.ms);
    for (const f of r.figures)
      put(f.clock === 'guest' ? 'guest figure' : 'host figure', f.phase, f.name, perRun, f.ms);
    for (const [key, ms] of perRun) rows.get(key)!.values.push(ms);
  }
  // Figures go right after the phase they were measured in.
  const hosts = order.filter((k) => rows.get(k)!.kind === 'host');
  const figures = order.filter((k) => rows.get(k)!.kind !== 'host');
  const sorted = hosts.flatMap((h) => [
    h,
    ...figures.filter((f) => rows.get(f)!.phase === rows.get(h)!.phase),
  ]);
  const orphans = figures.filter((f) => !sorted.includes(f));
  const out = [...sorted, ...orphans].map((k) => {
    const { kind, phase, name, values } = rows.get(k)!;
    const s = summarize(values);
    return { kind, phase, name, n: s.n, p50: s.p50, p99: s.p99 };
  });
  if (reports.length > 0) {
    const t = summarize(reports.map((r) => r.totalMs));
    out.push({ kind: 'host', phase: 'total', name: 'total', n: t.n, p50: t.p50, p99: t.p99 });
  }
  return out;
}

/** A phase table as Markdown, under a title; figures are indented below their phase. */
export function formatPhaseTable(title: string, rows: PhaseRow[]): string {
  const fmt = (v: number) =>
    Math.abs(v) >= 100 ? v.toFixed(0) : Math.abs(v) >= 10 ? v.toFixed(1) : v.toFixed(2);
  const lines = rows.map((r) => {
    const label = r.kind === 'host' ? r.name : `  ↳ ${r.name}`;
    const clock = r.kind === 'host' ? 'host' : r.kind === 'guest figure' ? 'guest' : 'host';
    return `| ${label} | ${clock} | ${r.n} | ${fmt(r.p50)} | ${fmt(r.p99)} |`;
  });
  return [
    `${title} — phases (ms; host phases add up to the total, ↳ figures are measured inside the phase above, guest ones on the guest's clock)`,
    '',
    '| phase | clock | n | p50 | p99 |',
    '|---|---|---|---|---|',
    ...lines,
  ].join('\n');
}

/** The reports a vmcache CLI appended to a `VMCACHE_PHASES` file, of `verb` (none if the file is missing). */
export async function readPhaseFile(file: string, verb: string): Promise<PhaseReport[]> {
  const { readFile } = await import('node:fs/promises');
  const text = await readFile(file, 'utf8').catch(() => '');
  return text
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as PhaseReport & { verb: string })
    .filter((r) => r.verb === verb);
}
