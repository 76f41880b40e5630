/** The VM cache rows of `npm run bench`. */
import { spawn } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync } from 'node:fs';
import { credentials, Metadata } from '@grpc/grpc-js';
import { VmFactory } from '../src/factory/factory.js';
import { LEASE_METADATA } from '../src/factory/remote-cache.js';
import type { PhaseReport } from '../src/platform/phases.js';
import { CacheServiceClient, type GrpcVM } from '../src/protocol/cache/generated/cache.js';
import { CacheServer } from '../src/server/cache-server.js';
import type { VmDeps } from '../src/vm/vm.js';
import { instantPool, instantVms } from '../test/helpers/instant-vms.js';
import { type PhaseRow, phaseTable, readPhaseFile } from './phases.js';
import { startBenchCache } from './server.js';
import { pssMiB, type Summary, summarize } from './stats.js';

/** One benchmark row. */
export interface Row {
  name: string;
  unit: string;
  summary: Summary;
  /** Where the time went (getVM, `vmcache run`): printed under the table and kept in the JSON. */
  phases?: PhaseRow[];
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** GetBaseVM over a warm channel against an in-process server whose "VMs" are instant fakes: the RPC path alone. */
export async function rpcLatency(deps: VmDeps, n: number): Promise<Row> {
  const dir = '/tmp/vmc-bench-rpc';
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  const fake = instantVms(dir);
  const pool = instantPool(fake, 64, 64);
  const server = new CacheServer(
    pool,
    { endpoint: `${dir}/cache.sock`, leaseTimeoutMs: 60_000, agentDialTimeoutMs: 1_000, metricsEndpoint: '' },
    deps,
    null,
  );
  await server.start();
  await pool.waitReady(64, 10_000);
  const client = new CacheServiceClient(`unix://${dir}/cache.sock`, credentials.createInsecure());
  const md = new Metadata();
  md.set(LEASE_METADATA, '1');
  const get = () =>
    new Promise<GrpcVM>((res, rej) => client.getBaseVm({}, md, (e, r) => (e ? rej(e) : res(r!))));
  const ack = (g: GrpcVM) =>
    new Promise<void>((res, rej) =>
      client.ackVm({ id: g.id, leaseId: g.leaseId }, (e) => (e ? rej(e) : res())),
    );
  for (let i = 0; i < 50; i++) await ack(await get()); // warm the channel and the JIT
  const times: number[] = [];
  for (let i = 0; i < n; i++) {
    const t = performance.now();
    const g = await get();
    times.push(performance.now() - t);
    await ack(g);
    if (i % 32 === 0) await sleep(1); // let the pool refill (fake boots are instant)
  }
  client.close();
  await server.stop();
  rmSync(dir, { recursive: true, force: true });
  return {
    name: 'GetBaseVM RPC on a warm channel (server path, instant fake VMs)',
    unit: 'ms',
    summary: summarize(times),
  };
}

function rssMiB(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : Number.NaN;
}

/** Real cache server with `size` slots (a `vmcache factory init` process): fill, memory, getVM, vm run. */
export async function realCache(
  repo: string,
  deps: VmDeps,
  size: number,
  log: (s: string) => void,
): Promise<Row[]> {
  const dir = '/tmp/vmc-bench-cache';
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  const rows: Row[] = [];
  log(`starting a cache server with ${size} slots`);
  const t0 = performance.now();
  const server = await startBenchCache(repo, deps, dir, size, '[cache]\nacquire_timeout = 120\n');
  const { env, remote } = server;
  try {
    for (;;) {
      const s = await remote.serverStatus();
      if (s.vmstatus.length === size) {
        const fill = performance.now() - t0;
        rows.push({
          name: `fill a pool of ${size} from empty (${s.bootFailures} failed boots)`,
          unit: 's',
          summary: summarize([fill / 1000]),
        });
        await sleep(2000);
        rows.push({
          name: `cache server RSS with ${size} idle VMs`,
          unit: 'MiB',
          summary: summarize([rssMiB(server.pid)]),
        });
        const pss: number[] = [];
        for (const v of s.vmstatus) pss.push(await pssMiB(v.pid));
        rows.push({ name: 'idle paused VM in the cache (QEMU PSS)', unit: 'MiB', summary: summarize(pss) });
        break;
      }
      await sleep(250);
    }
    const factory = new VmFactory(remote, deps);
    const base = remote.config();
    const plain: number[] = [];
    const breakdowns: PhaseReport[] = [];
    for (let i = 0; i < size - 4; i++) {
      const got = await factory.getVM(base);
      plain.push(got.timings.totalMs);
      breakdowns.push(got.phases);
      await got.vm.destroy();
    }
    rows.push({
      name: 'getVM from the cache to a usable VM (resume, reseed, clock)',
      unit: 'ms',
      summary: summarize(plain),
      phases: phaseTable(breakdowns),
    });
    const grown: number[] = [];
    for (let i = 0; i < 2; i++) {
      const got = await factory.getVM({ ...base, cpus: base.cpus + 1, memoryMiB: base.memoryMiB + 256 });
      grown.push(got.timings.totalMs);
      await got.vm.destroy();
    }
    rows.push({
      name: 'getVM from the cache grown by +1 vCPU and +256 MiB (hot-plug + online)',
      unit: 'ms',
      summary: summarize(grown),
    });
    const runs: number[] = [];
    const phaseFile = `${dir}/vm-run.phases`;
    for (let i = 0; i < 2; i++) {
      const t = performance.now();
      await new Promise<void>((res, rej) => {
        const c = spawn(`${repo}bin/vmcache`, ['vm', 'run', '--', 'true'], {
          env: { ...env, VMCACHE_PHASES: phaseFile },
          stdio: 'ignore',
        });
        // A from-the-cache run takes about a second; a minute means it hangs.
        const timer = setTimeout(() => c.kill('SIGKILL'), 60_000);
        c.on('exit', (code) => {
          clearTimeout(timer);
          code === 0 ? res() : rej(new Error(`vm run exited ${code}`));
        });
      });
      runs.push(performance.now() - t);
    }
    rows.push({
      name: '`vmcache vm run -- true` end to end (from the cache)',
      unit: 'ms',
      summary: summarize(runs),
      phases: phaseTable(await readPhaseFile(phaseFile, 'vm run')),
    });
  } finally {
    await server.stop();
    rmSync(dir, { recursive: true, force: true });
  }
  return rows;
}
