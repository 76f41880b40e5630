/**
 * Hand-off stress and concurrency: many consecutive getVM + exec + destroy through the API, many `vmcache run`
 * of a container, and 10 client processes × 10 concurrent requests against a pool of 4. Template clones
 * refill the pool (a cold boot per VM would make hundreds of hand-offs take hours under TCG).
 */
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { summarize } from '../bench/stats.js';
import { connectCache } from '../src/api.js';
import { busyboxBundle, busyboxRootfs } from '../test/helpers/bundle.js';
import { type Lab, leaks, runBounded } from './lab.js';
import { type ReliabilityRow, withDeadline } from './report.js';

/** The configuration of a lab's template-backed pool of `size`. */
export function templatePool(lab: Lab, size: number, extra = ''): string {
  return `[factory]\nenable_template = true\ntemplate_path = "${join(lab.dir, 'template')}"\nvm_cache_number = ${size}\nvm_cache_endpoint = "${lab.socket}"\n${extra}`;
}

/** Makes the lab's VM template (factory init with templating only), once. */
export async function makeTemplate(lab: Lab): Promise<void> {
  const { writeFileSync } = await import('node:fs');
  writeFileSync(
    lab.cfg,
    `[factory]\nenable_template = true\ntemplate_path = "${join(lab.dir, 'template')}"\n`,
  );
  const r = await lab.vmc(['factory', 'init'], 180_000);
  if (r.code !== 0) throw new Error(`making the template failed: ${r.stderr}`);
}

export async function stressRows(
  lab: Lab,
  opts: { handoffs: number; runs: number; log: (s: string) => void },
): Promise<ReliabilityRow[]> {
  const rows: ReliabilityRow[] = [];
  const before = lab.census();
  const server = await lab.startServer(templatePool(lab, 2));
  try {
    await server.waitReady(2, 120_000);
    // 1. Consecutive hand-offs through the API.
    const cache = await connectCache(lab.socket);
    const waits: number[] = [];
    let hangs = 0;
    let lost = 0;
    let failed = 0;
    let firstError = '';
    let startUsage = server.usage();
    for (let i = 0; i < opts.handoffs; i++) {
      if (i === 10) startUsage = server.usage(); // after warm-up: the server's steady state
      if (i % 50 === 0) opts.log(`hand-off ${i + 1}/${opts.handoffs}`);
      const t0 = performance.now();
      try {
        const vm = await withDeadline('getVM', 60_000, () => cache.getVM());
        waits.push(performance.now() - t0);
        const token = randomBytes(8).toString('hex');
        try {
          const r = await withDeadline('exec', 30_000, () => vm.run(['/bin/echo', token]));
          if (r.stdout.toString() !== `${token}\n`) lost++;
        } finally {
          await withDeadline('destroy', 30_000, () => vm.destroy());
        }
      } catch (err) {
        const m = String(err);
        if (m.includes('no result within')) hangs++;
        else failed++;
        firstError ||= m;
      }
    }
    await cache.close();
    const endUsage = server.usage();
    const w = summarize(waits);
    const rssGrowth = endUsage.rssMiB - startUsage.rssMiB;
    rows.push({
      section: 'stress',
      name: 'getVM + exec + destroy, consecutive, pool of 2 (template clones)',
      n: opts.handoffs,
      ok: hangs === 0 && lost === 0 && failed === 0 && endUsage.fds <= startUsage.fds + 2 && rssGrowth < 30,
      outcome: `${hangs} hangs, ${lost} lost outputs, ${failed} failed${firstError ? ` (${firstError.slice(0, 120)})` : ''}; server RSS ${startUsage.rssMiB.toFixed(0)} → ${endUsage.rssMiB.toFixed(0)} MiB, fds ${startUsage.fds} → ${endUsage.fds}`,
      figures: {
        waitP50: w.p50,
        waitP99: w.p99,
        hangs,
        lost,
        failed,
        rssStart: startUsage.rssMiB,
        rssEnd: endUsage.rssMiB,
        fdsStart: startUsage.fds,
        fdsEnd: endUsage.fds,
      },
    });

    // 2. Container runs through the CLI.
    const rootfs = busyboxRootfs(join(lab.dir, 'busybox'));
    let runHangs = 0;
    let runLost = 0;
    let runFailed = 0;
    const times: number[] = [];
    for (let i = 0; i < opts.runs; i++) {
      if (i % 25 === 0) opts.log(`container run ${i + 1}/${opts.runs}`);
      const token = randomBytes(8).toString('hex');
      const b = busyboxBundle(join(lab.dir, 'bundles', `r${i}`), rootfs, { args: ['/bin/echo', token] });
      const r = await lab.vmc(['run', '--bundle', b, `r${i}`], 90_000);
      times.push(r.ms);
      if (r.timedOut) runHangs++;
      else if (r.code !== 0) runFailed++;
      else if (r.stdout !== `${token}\n`) runLost++;
    }
    const t = summarize(times);
    rows.push({
      section: 'stress',
      name: '`vmcache run` of a busybox container, consecutive, from the cache',
      n: opts.runs,
      ok: runHangs === 0 && runLost === 0 && runFailed === 0,
      outcome: `${runHangs} hangs, ${runLost} lost outputs, ${runFailed} failed`,
      figures: { p50: t.p50, p99: t.p99, hangs: runHangs, lost: runLost, failed: runFailed },
    });
  } finally {
    await server.stop();
  }
  const l = leaks(before, lab.census());
  rows.push({ section: 'stress', name: 'after the stress: nothing left', n: 1, ok: l.ok, outcome: l.text });
  return rows;
}

/** 10 client processes × 10 concurrent requests against a pool of 4. */
export async function concurrencyRows(
  lab: Lab,
  opts: { clients: number; each: number; log: (s: string) => void },
): Promise<ReliabilityRow[]> {
  const before = lab.census();
  const server = await lab.startServer(templatePool(lab, 4, '[cache]\nacquire_timeout = 60\n'));
  const results: Array<{ id?: string; usable?: boolean; error?: string; waitMs: number }> = [];
  try {
    await server.waitReady(4, 120_000);
    opts.log(`${opts.clients} clients × ${opts.each} concurrent requests`);
    const client = new URL('./client.js', import.meta.url).pathname;
    const runs = await Promise.all(
      Array.from({ length: opts.clients }, () =>
        runBounded(process.execPath, [client, lab.socket, String(opts.each)], lab.env, 300_000),
      ),
    );
    for (const r of runs)
      for (const line of r.stdout.split('\n').filter(Boolean)) results.push(JSON.parse(line));
    const timedOut = runs.filter((r) => r.timedOut).length;
    const served = results.filter((r) => r.id);
    const ids = new Set(served.map((r) => r.id));
    const unusable = served.filter((r) => !r.usable).length;
    const refused = results.filter((r) => r.error);
    const unclear = refused.filter((r) => r.error !== 'VMC_ERR_CACHE_TIMEOUT');
    const w = summarize(results.map((r) => r.waitMs));
    const total = opts.clients * opts.each;
    return [
      {
        section: 'concurrency',
        name: `${opts.clients} clients × ${opts.each} concurrent getVM + exec, pool of 4`,
        n: total,
        ok:
          timedOut === 0 &&
          results.length === total &&
          ids.size === served.length &&
          unusable === 0 &&
          unclear.length === 0,
        outcome: `${served.length} served (${ids.size} distinct VMs, ${unusable} unusable), ${refused.length} refused with VMC_ERR_CACHE_TIMEOUT, ${unclear.length} other errors${unclear[0] ? ` (${unclear[0].error?.slice(0, 100)})` : ''}, ${timedOut} clients timed out`,
        figures: {
          served: served.length,
          distinct: ids.size,
          refused: refused.length,
          waitP50: w.p50,
          waitP99: w.p99,
        },
      },
      ...(await stopAndCount(lab, server, before)),
    ];
  } catch (err) {
    await server.stop();
    throw err;
  }
}

async function stopAndCount(
  lab: Lab,
  server: { stop(): Promise<void> },
  before: ReturnType<Lab['census']>,
): Promise<ReliabilityRow[]> {
  await server.stop();
  const l = leaks(before, lab.census());
  return [{ section: 'concurrency', name: 'after the burst: nothing left', n: 1, ok: l.ok, outcome: l.text }];
}
