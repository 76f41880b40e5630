/**
 * `npm run reliability`: the reliability suite. Bounded in count and time; traffic only to local sockets and
 * to namespaces it creates; it cleans up everything it starts. Prints a table like the bench, writes JSON to
 * reliability/results/latest.json (and a dated copy), and exits non-zero if any row failed.
 * Sizes: HANDOFFS (300), RUNS (100), CLIENTS (10) × EACH (10), FUZZ_CASES (1000), SEED (a fixed default, so a
 * run is reproducible); RELIABILITY_ONLY=fuzz,stress,concurrency,faults,security runs some sections only.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { faultRows } from './faults.js';
import { fuzzRows } from './fuzz.js';
import { Lab } from './lab.js';
import type { ReliabilityRow } from './report.js';
import { securityRows } from './security.js';
import { concurrencyRows, makeTemplate, stressRows } from './stress.js';

const env = (k: string, d: number) => Number(process.env[k] ?? d);
const only = new Set((process.env.RELIABILITY_ONLY ?? 'fuzz,stress,concurrency,faults,security').split(','));
const seed = env('SEED', 20261202);
const log = (s: string) => process.stderr.write(`reliability: ${s}\n`);
const repo = fileURLToPath(new URL('../../', import.meta.url)); // dist/reliability/ -> repository root
if (process.getuid?.() !== 0)
  throw new Error('the reliability suite needs root (mounts, VMs, an unprivileged probe)');

const started = performance.now();
const rows: ReliabilityRow[] = [];
const section = async (name: string, fn: () => Promise<ReliabilityRow[]>) => {
  if (!only.has(name)) return;
  const t0 = performance.now();
  try {
    rows.push(...(await fn()));
  } catch (err) {
    rows.push({
      section: name as ReliabilityRow['section'],
      name: `${name}: the section itself`,
      n: 1,
      ok: false,
      outcome: String(err).slice(0, 300),
    });
  }
  log(`${name} done in ${((performance.now() - t0) / 1000).toFixed(0)} s`);
};

await section('fuzz', () => fuzzRows({ seed, cases: env('FUZZ_CASES', 1000), log }));
const needsVms = ['stress', 'concurrency', 'faults', 'security'].some((s) => only.has(s));
const lab = needsVms ? new Lab('/tmp/vmc-rel') : null;
try {
  if (lab) {
    log('making the VM template (clones refill the pools)');
    await makeTemplate(lab);
    await section('stress', () =>
      stressRows(lab, { handoffs: env('HANDOFFS', 300), runs: env('RUNS', 100), log }),
    );
    await section('concurrency', () =>
      concurrencyRows(lab, { clients: env('CLIENTS', 10), each: env('EACH', 10), log }),
    );
    await section('faults', () => faultRows(lab, log));
    await section('security', () => securityRows(lab, log));
  }
} finally {
  await lab?.cleanup();
}

const failed = rows.filter((r) => !r.ok);
const result = {
  date: new Date().toISOString(),
  seconds: Math.round((performance.now() - started) / 1000),
  seed,
  host: { cpus: cpus().length, loadavg: loadavg(), node: process.version },
  rows,
  passed: rows.length - failed.length,
  failed: failed.length,
};
mkdirSync(join(repo, 'reliability/results'), { recursive: true });
writeFileSync(join(repo, 'reliability/results/latest.json'), `${JSON.stringify(result, null, 2)}\n`);
writeFileSync(
  join(repo, `reliability/results/${result.date.slice(0, 19).replace(/:/g, '')}.json`),
  `${JSON.stringify(result, null, 2)}\n`,
);
const table = [
  '| section | scenario | n | ok | outcome |',
  '|---|---|---|---|---|',
  ...rows.map(
    (r) =>
      `| ${r.section} | ${r.name} | ${r.n} | ${r.ok ? 'yes' : '**no**'} | ${r.outcome.replace(/\|/g, '/')} |`,
  ),
].join('\n');
process.stdout.write(
  `\nvmcache reliability — ${result.date}, ${result.seconds} s, seed ${seed}, load ${loadavg()
    .map((l) => l.toFixed(1))
    .join(
      ' ',
    )}\n\n${table}\n\n${result.passed} passed, ${result.failed} failed\nJSON: reliability/results/latest.json\n`,
);
process.exitCode = failed.length === 0 ? 0 : 1;
