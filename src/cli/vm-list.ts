import { isAlive } from '../platform/process.js';
import { listVmDirs } from '../vm/record.js';
import { sweepOrphans } from '../vm/sweep.js';
import type { CliContext } from './context.js';

/** `vmcache vm list [--json]`: every VM recorded on this host. */
export function vmList(ctx: CliContext, opts: { json?: boolean }): number {
  const rows = listVmDirs(ctx.paths.runDir).map(({ id, record, error }) => ({
    id,
    pid: record?.qemu.pid ?? null,
    alive: record ? isAlive(record.qemu) : false,
    owner: record?.owner?.pid ?? null,
    ownerAlive: record?.owner ? isAlive(record.owner) : false,
    cpus: record?.spec.cpus ?? null,
    memoryMiB: record?.spec.memoryMiB ?? null,
    ageSec: record ? Math.round((ctx.clock.now() - record.createdAt) / 1000) : null,
    error: error?.message,
  }));
  if (opts.json) {
    process.stdout.write(`${JSON.stringify(rows, null, 2)}\n`);
    return 0;
  }
  process.stdout.write(
    `${'ID'.padEnd(14)}${'PID'.padEnd(9)}${'STATE'.padEnd(9)}${'OWNER'.padEnd(16)}${'CPUS'.padEnd(6)}${'MEM'.padEnd(7)}AGE\n`,
  );
  for (const r of rows) {
    const owner = r.owner === null ? '-' : `${r.owner}${r.ownerAlive ? '' : ' (gone)'}`;
    process.stdout.write(
      `${r.id.padEnd(14)}${String(r.pid ?? '-').padEnd(9)}${(r.alive ? 'running' : 'dead').padEnd(9)}${owner.padEnd(16)}${String(r.cpus ?? '-').padEnd(6)}${String(r.memoryMiB ?? '-').padEnd(7)}${r.ageSec ?? '-'}s\n`,
    );
  }
  return 0;
}

/** `vmcache vm gc`: reaps orphaned VMs and removes records of dead ones. */
export async function vmGc(ctx: CliContext, opts: { unowned?: boolean } = {}): Promise<number> {
  const r = await sweepOrphans(ctx, { includeUnowned: opts.unowned === true });
  ctx.say(
    `gc: reaped ${r.reaped.length} orphaned VM(s)${r.reaped.length ? ` (${r.reaped.join(', ')})` : ''}, removed ${r.removed.length} stale record(s)`,
  );
  return 0;
}
