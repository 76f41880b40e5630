import { readFileSync } from 'node:fs';
import { isVmcError } from '../../errors.js';
import { effectiveStatus } from '../../sandbox/state-store.js';
import { connectShim, ociState, type RuntimeContext } from './common.js';

/** `vmcache state ID`: the OCI state as JSON. */
export function state(ctx: RuntimeContext, id: string): number {
  process.stdout.write(`${JSON.stringify(ociState(ctx.store.read(id)), null, 2)}\n`);
  return 0;
}

/** `vmcache list [--format table|json]`. */
export function list(ctx: RuntimeContext, opts: { format?: string; quiet?: boolean }): number {
  const states = ctx.store.list().flatMap((id) => {
    try {
      return [ociState(ctx.store.read(id))];
    } catch {
      return []; // being deleted
    }
  });
  if (opts.quiet) {
    for (const s of states) process.stdout.write(`${s.id}\n`);
  } else if (opts.format === 'json') {
    process.stdout.write(`${JSON.stringify(states)}\n`);
  } else {
    const rows = [['ID', 'PID', 'STATUS', 'BUNDLE', 'CREATED', 'OWNER']];
    for (const s of states)
      rows.push([s.id, s.pid, s.status, s.bundle, s.created, s.owner].map((v) => String(v)));
    const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
    for (const r of rows)
      process.stdout.write(
        `${r
          .map((c, i) => c.padEnd(widths[i]!))
          .join('   ')
          .trimEnd()}\n`,
      );
  }
  return 0;
}

/** `vmcache ps ID [--format table|json]`: host pids standing for the container's processes. */
export async function ps(ctx: RuntimeContext, id: string, opts: { format?: string }): Promise<number> {
  const s = ctx.store.read(id);
  let pids: number[] = [];
  if (effectiveStatus(s) !== 'stopped') {
    try {
      const c = await connectShim(ctx, id);
      try {
        pids = (await c.request<{ pids: number[] }>({ t: 'ps' })).pids;
      } finally {
        c.close();
      }
    } catch (err) {
      if (!isVmcError(err, 'VMC_ERR_CONTAINER_UNREACHABLE')) throw err;
    }
  }
  if (opts.format === 'json') {
    process.stdout.write(`${JSON.stringify(pids)}\n`);
    return 0;
  }
  process.stdout.write('PID   CMD\n');
  for (const pid of pids) {
    let cmd = '?';
    try {
      cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ').trim();
    } catch {
      // exited meanwhile
    }
    process.stdout.write(`${String(pid).padEnd(6)}${cmd}\n`);
  }
  return 0;
}
