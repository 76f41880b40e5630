/**
 * `npm run bench`: measures vmcache on this host in one run and prints a table; writes the numbers as JSON to
 * bench/results/latest.json (and a dated copy). Sizes scale with BENCH_SCALE (default 1).
 */
import { spawn } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import { defaultVmSpec } from '../src/config/defaults.js';
import { readManifest } from '../src/guest/image/manifest.js';
import { detectAccel } from '../src/hypervisor/qemu/accel.js';
import { systemClock } from '../src/platform/clock.js';
import { runCommand } from '../src/platform/command.js';
import { nullLogger } from '../src/platform/logger.js';
import { defaultPaths } from '../src/platform/paths.js';
import { PhaseRecorder, type PhaseReport } from '../src/platform/phases.js';
import { Vm } from '../src/vm/vm.js';
import { realCache, rpcLatency } from './cache.js';
import { criRows } from './cri.js';
import { formatPhaseTable, type PhaseRow, phaseTable } from './phases.js';
import { podRows } from './pod.js';
import { poolRows } from './pools.js';
import { runtimeRows } from './runtime.js';
import { pssMiB, type Summary, summarize } from './stats.js';
import { templateRows } from './template.js';

const scale = Number(process.env.BENCH_SCALE ?? 1);
const repo = new URL('../../', import.meta.url).pathname; // dist/bench/ -> repository root
const paths = { ...defaultPaths(process.env, process.getuid?.() ?? 0), runDir: '/tmp/vmc-bench' };
const deps = { paths, clock: systemClock, logger: nullLogger, run: runCommand };
const accel = detectAccel();
const spec = defaultVmSpec(paths.imageDir, accel.accel);
if (!readManifest(paths.imageDir))
  throw new Error(`no guest image in ${paths.imageDir}; run 'vmcache image build'`);

interface Row {
  name: string;
  unit: string;
  summary: Summary;
  note?: string;
  phases?: PhaseRow[];
}
const rows: Row[] = [];
let step = 'start';
const log = (s: string) => {
  step = s;
  process.stderr.write(`bench: ${s}\n`);
};

// The whole bench has a bound too (a full run takes ~25 min on 2 cores under TCG): a step that hangs ends it
// with the step named, instead of waiting forever.
const BENCH_DEADLINE_MS = Number(process.env.BENCH_DEADLINE_S ?? 5400) * 1000;
setTimeout(() => {
  process.stderr.write(`bench: over the ${BENCH_DEADLINE_MS / 1000} s deadline during "${step}"; stopping\n`);
  process.exit(1);
}, BENCH_DEADLINE_MS).unref();

async function timeCli(args: string[]): Promise<number> {
  const t0 = performance.now();
  await new Promise<void>((resolve, reject) => {
    const c = spawn(join(repo, 'bin/vmcache'), args, {
      env: { ...process.env, VMCACHE_RUN_DIR: paths.runDir },
      stdio: 'ignore',
    });
    const timer = setTimeout(() => {
      c.kill('SIGKILL');
      reject(new Error(`vmcache ${args.join(' ')}: no exit within 300 s`));
    }, 300_000);
    c.on('exit', () => clearTimeout(timer));
    c.on('exit', (code) =>
      code === 0 ? resolve() : reject(new Error(`vmcache ${args.join(' ')} exited ${code}`)),
    );
  });
  return performance.now() - t0;
}

// 1. Cold boot to a ready agent.
const boots: number[] = [];
const bootPhases: PhaseReport[] = [];
const pss: number[] = [];
for (let i = 0; i < 3 * scale; i++) {
  log(`cold boot ${i + 1}`);
  const rec = new PhaseRecorder(deps.clock);
  const vm = await Vm.boot(spec, deps, { trace: rec });
  boots.push(vm.timings.totalMs);
  bootPhases.push(rec.report());
  await systemClock.sleep(2000); // let the guest settle before reading its memory
  pss.push(await pssMiB(vm.record.qemu.pid));
  if (i < 3 * scale - 1) await vm.destroy();
  else {
    // 2. Agent round trip and exec round trip in a running VM.
    for (let w = 0; w < 30; w++) await vm.agent.request({ op: 'ping' });
    const rtt: number[] = [];
    for (let k = 0; k < 300 * scale; k++) {
      const t = performance.now();
      await vm.agent.request({ op: 'ping' });
      rtt.push(performance.now() - t);
    }
    const execs: number[] = [];
    for (let k = 0; k < 10 * scale; k++) {
      const t = performance.now();
      await vm.run(['/bin/true']);
      execs.push(performance.now() - t);
    }
    rows.push({ name: 'agent round trip (ping) in a running VM', unit: 'ms', summary: summarize(rtt) });
    rows.push({ name: 'exec /bin/true in a running VM', unit: 'ms', summary: summarize(execs) });
    await vm.destroy();
  }
}
rows.unshift({
  name: 'cold boot to agent-ready',
  unit: 'ms',
  summary: summarize(boots),
  phases: phaseTable(bootPhases),
});
rows.push({ name: 'idle VM memory (QEMU PSS)', unit: 'MiB', summary: summarize(pss) });

// 3. The CLI end to end.
const ends: number[] = [];
for (let i = 0; i < 3 * scale; i++) {
  log(`vmcache vm run -- true ${i + 1}`);
  ends.push(await timeCli(['vm', 'run', '--', 'true']));
}
rows.push({ name: '`vmcache vm run -- true` end to end (cold)', unit: 'ms', summary: summarize(ends) });
const starts: number[] = [];
for (let i = 0; i < 10; i++) starts.push(await timeCli(['--version']));
rows.push({ name: 'CLI start-up (`vmcache --version`)', unit: 'ms', summary: summarize(starts) });

// 4. The VM cache.
rows.push(await rpcLatency(deps, 2000 * scale));
rows.push(...(await realCache(repo, deps, Number(process.env.BENCH_POOL ?? 8), log)));
// 4b. Pools per shape against Kata's single pool, on one bursty trace.
const pools = await poolRows(repo, deps, log);
rows.push(...pools.map((p) => p.row));
// 5. The OCI runtime.
rows.push(...(await runtimeRows(repo, deps, 5 * scale, log)));
// 6. Pods: the network namespace into a cached VM.
rows.push(...(await podRows(repo, deps, 3 * scale, log)));
// 7. Kubernetes: pod start through containerd's CRI plugin, cache on vs off.
rows.push(...(await criRows(repo, deps, 5 * scale, log)));
// 8. VM templating.
const tpl = await templateRows(deps, spec, log);
rows.push(...tpl.rows);
const cold = rows.find((r) => r.name.startsWith('cold boot'))!.summary.p50;
const hit = rows.find((r) => r.name.startsWith('getVM from the cache to'))!.summary.p50;
const p50 = (prefix: string) => rows.find((r) => r.name.startsWith(prefix))?.summary.p50 ?? Number.NaN;
const ratios = {
  coldBootOverCacheGetVM: cold / hit,
  coldBootOverClone: cold / tpl.cloneMs,
  clonePssOverColdPss: tpl.pssRatio,
  criPodStartColdOverCached:
    p50('pod start through CRI (RunPodSandbox → container running), shim v2 (vmcache-v2), no cache') /
    p50('pod start through CRI (RunPodSandbox → container running), shim v2 (vmcache-v2), from the cache'),
  /** The aim of issue 13: ≤ 0.5 (the shim v2 at least twice as fast as the runc-CLI path, both from the cache). */
  criPodStartShimV2OverRuncCli:
    p50('pod start through CRI (RunPodSandbox → container running), shim v2 (vmcache-v2), from the cache') /
    p50('pod start through CRI (RunPodSandbox → container running), runc-CLI path (vmcache), from the cache'),
  runtimeRunColdOverCached:
    p50('`vmcache run` busybox /bin/true, no cache') / p50('`vmcache run` busybox /bin/true, from the cache'),
};

const fmt = (v: number) => (v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2));
const header = `| measurement | n | p50 | p99 | min | max |\n|---|---|---|---|---|---|`;
const table = [
  header,
  ...rows.map(
    (r) =>
      `| ${r.name} (${r.unit}) | ${r.summary.n} | ${fmt(r.summary.p50)} | ${fmt(r.summary.p99)} | ${fmt(r.summary.min)} | ${fmt(r.summary.max)} |`,
  ),
].join('\n');
// The breakdowns (getVM, `vmcache run`...): where the next change to the fast path shows.
const phaseTables = rows
  .filter((r) => r.phases?.length)
  .map((r) => formatPhaseTable(r.name, r.phases!))
  .join('\n\n');
const result = {
  date: new Date().toISOString(),
  host: {
    cpus: cpus().length,
    model: cpus()[0]?.model,
    loadavg: loadavg(),
    accel: accel.accel,
    node: process.version,
  },
  image: readManifest(paths.imageDir),
  rows,
  ratios,
  pools: pools.map(({ setup, base, requests, hitRate, exactRate, failed }) => ({
    setup,
    base,
    requests,
    hitRate,
    exactRate,
    failed,
  })),
};
rmSync(paths.runDir, { recursive: true, force: true }); // every VM was destroyed; drop the empty state tree
mkdirSync(join(repo, 'bench/results'), { recursive: true });
writeFileSync(join(repo, 'bench/results/latest.json'), `${JSON.stringify(result, null, 2)}\n`);
writeFileSync(
  join(repo, `bench/results/${result.date.slice(0, 19).replace(/:/g, '')}.json`),
  `${JSON.stringify(result, null, 2)}\n`,
);
const poolLine = pools
  .map(
    (p) =>
      `${p.setup} (${p.base}): ${(p.hitRate * 100).toFixed(0)}% hits, ${(p.exactRate * 100).toFixed(0)}% exact shape, ${p.failed} failed`,
  )
  .join('; ');
process.stdout.write(
  `\nvmcache bench — ${result.date}, ${accel.accel}, ${cpus().length} cores, load ${loadavg()
    .map((l) => l.toFixed(1))
    .join(
      ' ',
    )}\n\n${table}\n\n${phaseTables ? `${phaseTables}\n\n` : ''}cold boot / cache getVM (p50): ${ratios.coldBootOverCacheGetVM.toFixed(0)}x; cold boot / template clone (p50): ${ratios.coldBootOverClone.toFixed(0)}x; PSS of 4 clones / 4 cold VMs: ${(ratios.clonePssOverColdPss * 100).toFixed(0)}%; vmcache run cold / cached (p50): ${ratios.runtimeRunColdOverCached.toFixed(0)}x; CRI pod start cold / cached (shim v2, p50): ${ratios.criPodStartColdOverCached.toFixed(1)}x; CRI pod start shim v2 / runc-CLI path (from the cache, p50): ${ratios.criPodStartShimV2OverRuncCli.toFixed(2)}\nbursty trace: ${poolLine}\nJSON: bench/results/latest.json\n`,
);
