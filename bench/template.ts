/** The VM templating rows of `npm run bench`. */
import { cpus } from 'node:os';
import type { FactoryBase } from '../src/factory/base.js';
import { CachingFactory } from '../src/factory/cache.js';
import { DirectFactory } from '../src/factory/direct.js';
import { VmFactory } from '../src/factory/factory.js';
import { createTemplate, destroyTemplate, TemplateFactory } from '../src/factory/template.js';
import type { VmSpec } from '../src/hypervisor/types.js';
import type { PhaseReport } from '../src/platform/phases.js';
import type { VmDeps } from '../src/vm/vm.js';
import type { Row } from './cache.js';
import { phaseTable } from './phases.js';
import { pssMiB, summarize } from './stats.js';

/** Template creation, clone vs cold, pool refill with clones vs cold boots, PSS of 4 clones vs 4 cold VMs. */
export async function templateRows(
  deps: VmDeps,
  spec: VmSpec,
  log: (s: string) => void,
): Promise<{ rows: Row[]; pssRatio: number; cloneMs: number }> {
  const dir = '/tmp/vmc-bench-template';
  await destroyTemplate(dir, deps);
  const rows: Row[] = [];
  try {
    log('creating a VM template');
    let t = performance.now();
    await createTemplate(spec, dir, deps);
    rows.push({
      name: 'create the VM template (boot, park, save)',
      unit: 's',
      summary: summarize([(performance.now() - t) / 1000]),
    });
    const { factory } = await TemplateFactory.open(spec, dir, deps, { create: 'no' });
    const f = new VmFactory(factory, deps);
    const clones: number[] = [];
    const breakdowns: PhaseReport[] = [];
    for (let i = 0; i < 5; i++) {
      t = performance.now();
      const got = await f.getVM(spec);
      clones.push(performance.now() - t);
      breakdowns.push(got.phases);
      await got.vm.destroy();
    }
    rows.push({
      name: 'getVM as a template clone to a usable VM (spawn, load, resume, reseed, clock)',
      unit: 'ms',
      summary: summarize(clones),
      phases: phaseTable(breakdowns),
    });
    const pss: Record<string, number> = {};
    const bases: Array<[string, FactoryBase]> = [
      ['template clones', factory],
      ['cold boots', new DirectFactory(spec, deps)],
    ];
    for (const [what, base] of bases) {
      log(`filling a pool of 4 with ${what}`);
      const pool = new CachingFactory(
        base,
        {
          size: 4,
          maxParallelBoots: Math.max(1, Math.floor(cpus().length / 2)),
          maxAgeMs: 0,
          healthIntervalMs: 60_000,
          acquireTimeoutMs: 60_000,
          retryInitialMs: 1_000,
          retryMaxMs: 5_000,
        },
        { clock: deps.clock, logger: deps.logger },
      );
      t = performance.now();
      pool.start();
      await pool.waitReady(4, 300_000);
      rows.push({
        name: `fill a pool of 4 from empty with ${what}`,
        unit: 's',
        summary: summarize([(performance.now() - t) / 1000]),
      });
      await new Promise((r) => setTimeout(r, 2_000));
      const each = await Promise.all(pool.status().idle.map((v) => pssMiB(v.pid)));
      pss[what] = each.reduce((a, b) => a + b, 0);
      rows.push({
        name: `host memory of 4 idle VMs from ${what} (QEMU PSS, total)`,
        unit: 'MiB',
        summary: summarize([pss[what]!]),
      });
      await pool.close();
    }
    return { rows, pssRatio: pss['template clones']! / pss['cold boots']!, cloneMs: summarize(clones).p50 };
  } finally {
    await destroyTemplate(dir, deps);
  }
}
