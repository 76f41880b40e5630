/**
 * Faults: something is killed (the server with idle VMs, an idle QEMU, a client mid hand-off, a container's
 * host-side process, the guest agent), the state directory is full, the guest image goes missing while the
 * pool refills. For each, what the system did and what was left (nothing, is the promise).
 */
import { cpSync, mkdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { credentials, Metadata } from '@grpc/grpc-js';
import { connectCache } from '../src/api.js';
import { LEASE_METADATA } from '../src/factory/remote-cache.js';
import { isAlive } from '../src/platform/process.js';
import { CacheServiceClient, type GrpcVM } from '../src/protocol/cache/generated/cache.js';
import { decodeHandoff } from '../src/vm/handoff.js';
import { busyboxBundle, busyboxRootfs } from '../test/helpers/bundle.js';
import { IMAGE_DIR } from '../test/helpers/vm-env.js';
import { type Lab, leaks } from './lab.js';
import { type ReliabilityRow, withDeadline } from './report.js';
import { templatePool } from './stress.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until(what: string, ms: number, ok: () => boolean | Promise<boolean>): Promise<number> {
  const t0 = performance.now();
  while (!(await ok())) {
    if (performance.now() - t0 > ms) throw new Error(`${what}: not within ${ms} ms`);
    await sleep(100);
  }
  return performance.now() - t0;
}

/** A Kata-style client that takes a VM under a lease and never acknowledges it (it died mid hand-off). */
function takeUnderLease(endpoint: string): Promise<GrpcVM> {
  const c = new CacheServiceClient(`unix://${endpoint}`, credentials.createInsecure());
  const md = new Metadata();
  md.set(LEASE_METADATA, '1');
  return new Promise((resolve, reject) =>
    c.getBaseVm({}, md, { deadline: Date.now() + 60_000 }, (e, r) => {
      c.close();
      if (e) reject(e);
      else resolve(r!);
    }),
  );
}

/** Runs one fault scenario as a row; an exception is the row's failure, with its message. */
async function scenario(lab: Lab, name: string, fn: () => Promise<string>): Promise<ReliabilityRow> {
  const before = lab.census();
  try {
    const did = await withDeadline(name, 240_000, fn);
    const l = leaks(before, lab.census());
    return { section: 'faults', name, n: 1, ok: l.ok, outcome: `${did}; ${l.text}` };
  } catch (err) {
    return { section: 'faults', name, n: 1, ok: false, outcome: String(err).slice(0, 300) };
  }
}

export async function faultRows(lab: Lab, log: (s: string) => void): Promise<ReliabilityRow[]> {
  const rows: ReliabilityRow[] = [];
  const config = templatePool(lab, 2, '[cache]\nhealth_interval = 1\nlease_timeout = 3\n');

  log('fault: kill -9 of the server with idle VMs');
  rows.push(
    await scenario(lab, 'kill -9 of the cache server with 2 idle VMs, then a new server', async () => {
      const s1 = await lab.startServer(config);
      await s1.waitReady(2, 120_000);
      const idle = await s1.idle();
      await s1.crash();
      const s2 = await lab.startServer(config);
      try {
        await s2.waitReady(2, 120_000);
        const now = await s2.idle();
        const kept = idle.filter((id) => now.includes(id)).length;
        return `the new server stopped the ${idle.length - kept} orphaned idle VMs and refilled (${kept} adopted)`;
      } finally {
        await s2.stop();
      }
    }),
  );

  const server = await lab.startServer(config);
  try {
    await server.waitReady(2, 120_000);
    log('fault: kill -9 of an idle QEMU');
    rows.push(
      await scenario(lab, 'kill -9 of an idle QEMU in the pool', async () => {
        const cache = await connectCache(lab.socket);
        const st = await cache.status();
        const victim = st.vmstatus[0]!;
        process.kill(victim.pid, 'SIGKILL');
        const vm = await withDeadline('getVM', 60_000, () => cache.getVM());
        const handedDead = vm.id === victim.id;
        await vm.destroy();
        await cache.close();
        const ms = await until('the pool to refill without the dead VM', 60_000, async () => {
          const ids = await server.idle();
          return ids.length === 2 && !ids.includes(victim.id);
        });
        if (handedDead) throw new Error('the dead VM was handed out');
        return `never handed out; replaced within ${Math.round(ms)} ms`;
      }),
    );

    log('fault: a client dies mid hand-off');
    rows.push(
      await scenario(
        lab,
        'a client dies mid hand-off (takes a VM under a lease, never acknowledges)',
        async () => {
          const g = await takeUnderLease(lab.socket);
          const rec = decodeHandoff(g.hypervisor);
          const ms = await until('the abandoned VM to be stopped', 30_000, () => !isAlive(rec.qemu));
          await server.waitReady(2, 60_000);
          return `the server stopped the VM ${Math.round(ms)} ms later (lease 3 s)`;
        },
      ),
    );

    log("fault: kill -9 of a container's host-side process");
    rows.push(
      await scenario(lab, "kill -9 of a running container's host-side process, then delete", async () => {
        const rootfs = busyboxRootfs(join(lab.dir, 'fault-busybox'));
        const b = busyboxBundle(join(lab.dir, 'bundles', 'kshim'), rootfs, {
          args: ['sh', '-c', 'while :; do sleep 1; done'],
        });
        const r = await lab.vmc(['run', '-d', '--bundle', b, 'kshim'], 90_000);
        if (r.code !== 0) throw new Error(`run -d failed: ${r.stderr}`);
        const st = JSON.parse((await lab.vmc(['state', 'kshim'])).stdout) as { pid: number };
        process.kill(st.pid, 'SIGKILL');
        await until('the container to read as stopped', 30_000, async () =>
          (await lab.vmc(['state', 'kshim'])).stdout.includes('"stopped"'),
        );
        const d = await lab.vmc(['delete', 'kshim'], 60_000);
        if (d.code !== 0) throw new Error(`delete failed: ${d.stderr}`);
        await server.waitReady(2, 60_000);
        return 'read as stopped; delete stopped its VM';
      }),
    );

    log('fault: the guest agent is killed mid exec');
    rows.push(
      await scenario(lab, 'the guest agent is killed while an exec runs', async () => {
        const cache = await connectCache(lab.socket);
        const vm = await withDeadline('getVM', 60_000, () => cache.getVM());
        await cache.close();
        try {
          const p = await vm.exec({ args: ['/bin/sh', '-c', 'sleep 2; kill -9 $PPID; sleep 600'] });
          const outcome = await withDeadline('the exec to end', 90_000, () =>
            p.wait().then(
              (s) => `exited ${JSON.stringify(s)}`,
              (e: unknown) => `reported: ${String((e as Error).message).slice(0, 100)}`,
            ),
          );
          return `the exec ended, not hung: ${outcome}`;
        } finally {
          await vm.destroy();
          await server.waitReady(2, 60_000);
        }
      }),
    );
  } finally {
    await server.stop();
  }

  log('fault: a full state directory');
  rows.push(
    await scenario(lab, 'the state directory is full (a 1 MiB tmpfs, filled)', async () => {
      const full = join(lab.dir, 'full');
      mkdirSync(full, { recursive: true });
      await lab.vmc(['vm', 'list'], 10_000); // nothing
      const { execFileSync } = await import('node:child_process');
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'vmc-full', full]);
      try {
        writeFileSync(join(full, 'fill'), Buffer.alloc(1024 * 1024));
      } catch {
        // ENOSPC: full, as wanted
      }
      try {
        const env = { ...lab.env, VMCACHE_RUN_DIR: full };
        writeFileSync(lab.cfg, '[factory]\nvm_cache_number = 0\n');
        const r = await lab.vmc(['vm', 'run', '--', 'true'], 120_000, undefined, env);
        if (r.code === 0) throw new Error('vm run succeeded on a full disk?');
        if (r.timedOut) throw new Error('vm run hung on a full disk');
        const leftQemu = lab.census().qemu;
        return `vm run failed with ${/VMC_ERR_[A-Z_]+/.exec(r.stderr)?.[0] ?? 'an error'} (${r.stderr.trim().split('\n').pop()?.slice(0, 100)}); ${leftQemu} QEMU running`;
      } finally {
        execFileSync('umount', [full]);
      }
    }),
  );

  log('fault: the guest image goes missing while the pool refills');
  rows.push(
    await scenario(lab, 'the guest image disappears while the pool refills, then comes back', async () => {
      const image = join(lab.dir, 'image');
      cpSync(IMAGE_DIR, image, { recursive: true });
      const env = { ...lab.env, VMCACHE_IMAGE_DIR: image };
      const s = await lab.startServer(
        `[factory]\nvm_cache_number = 1\nvm_cache_endpoint = "${lab.socket}"\n[cache]\nretry_initial = 1\nretry_max = 2\nhealth_interval = 1\n`,
        env,
      );
      try {
        await s.waitReady(1, 120_000);
        renameSync(join(image, 'vmlinux'), join(image, 'vmlinux.away'));
        const cache = await connectCache(lab.socket);
        const vm = await withDeadline('getVM', 60_000, () => cache.getVM());
        await vm.destroy();
        // The refill now fails: reported, retried with backoff, nothing left by the failed boots.
        await until('a failed boot to be reported', 60_000, async () => {
          const st = await cache.status();
          return st.bootFailures > 0;
        });
        const failures = (await cache.status()).bootFailures;
        renameSync(join(image, 'vmlinux.away'), join(image, 'vmlinux'));
        await s.waitReady(1, 180_000);
        await cache.close();
        return `${failures}+ failed boots reported and retried; the pool recovered once the kernel was back`;
      } finally {
        await s.stop();
        rmSync(image, { recursive: true, force: true });
      }
    }),
  );
  return rows;
}
