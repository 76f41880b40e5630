/**
 * Runs the fuzz section alone: `SEED=42 CASES=200 node dist/reliability/fuzz-main.js`. Prints progress on
 * stderr and the rows as JSON on stdout; exits 1 when a row is not ok.
 */
import { fuzzRows } from './fuzz.js';

const log = (s: string) => process.stderr.write(`${s}\n`);
const t0 = performance.now();
const rows = await fuzzRows({
  seed: Number(process.env.SEED ?? 42),
  cases: Number(process.env.CASES ?? 200),
  log,
});
log(
  `fuzz: ${rows.filter((r) => r.ok).length}/${rows.length} rows ok in ${Math.round(performance.now() - t0)} ms`,
);
process.stdout.write(`${JSON.stringify(rows, null, 2)}\n`);
process.exitCode = rows.every((r) => r.ok) ? 0 : 1;
