/** The OCI runtime rows of `npm run bench`: `vmcache run` of a busybox bundle, cached vs cold, vs runc/crun. */
import { spawn } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import type { VmDeps } from '../src/vm/vm.js';
import { busyboxBundle, busyboxRootfs } from '../test/helpers/bundle.js';
import type { Row } from './cache.js';
import { phaseTable, readPhaseFile } from './phases.js';
import { startBenchCache } from './server.js';
import { summarize } from './stats.js';

/**
 * Runs a program to completion; resolves with its wall time in ms, rejects (with its stderr) on failure or
 * after `deadlineMs` (killed: the bench never waits without a bound).
 */
function timed(cmd: string, args: string[], env: NodeJS.ProcessEnv, deadlineMs = 300_000): Promise<number> {
  const t0 = performance.now();
  return new Promise((resolve, reject) => {
    const c = spawn(cmd, args, { env, stdio: ['ignore', 'ignore', 'pipe'] });
    const timer = setTimeout(() => {
      c.kill('SIGKILL');
      reject(new Error(`${cmd} ${args.join(' ')}: no exit within ${deadlineMs} ms`));
    }, deadlineMs);
    c.on('close', () => clearTimeout(timer));
    let err = '';
    c.stderr.on('data', (d: Buffer) => {
      err += d.toString();
    });
    c.on('error', reject);
    c.on('exit', (code) =>
      code === 0
        ? resolve(performance.now() - t0)
        : reject(new Error(`${cmd} exited ${code}: ${err.trim()}`)),
    );
  });
}

/**
 * `vmcache run` of a busybox bundle running /bin/true, from process start to exit: with the VM cache (a pool
 * of 2, measured with the pool full, i.e. no refill boot competing for the CPUs) and without (a cold boot);
 * runc and crun from Debian on the same bundle as the no-VM reference; and the CLI start-up of `state`.
 */
export async function runtimeRows(
  repo: string,
  deps: VmDeps,
  n: number,
  log: (s: string) => void,
): Promise<Row[]> {
  const dir = '/tmp/vmc-bench-rt';
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  const rootfs = busyboxRootfs(`${dir}/busybox`);
  const bundle = busyboxBundle(`${dir}/bundle`, rootfs, { args: ['/bin/true'] });
  const vmcache = `${repo}bin/vmcache`;
  const cold = `${dir}/cold.toml`;
  writeFileSync(cold, '[factory]\nvm_cache_number = 0\n');
  const coldEnv = { ...process.env, VMCACHE_CONFIG: cold, VMCACHE_RUN_DIR: deps.paths.runDir };
  const rows: Row[] = [];
  const run = (env: NodeJS.ProcessEnv, id: string) =>
    timed(vmcache, ['--root', `${dir}/root`, 'run', '--bundle', bundle, id], env);

  const coldTimes: number[] = [];
  for (let i = 0; i < Math.max(2, Math.ceil(n / 3)); i++) {
    log(`vmcache run (cold) ${i + 1}`);
    coldTimes.push(await run(coldEnv, `cold${i}`));
  }
  rows.push({
    name: '`vmcache run` busybox /bin/true, no cache (cold boot)',
    unit: 'ms',
    summary: summarize(coldTimes),
  });

  log('starting a cache server with 2 slots for the runtime rows');
  const server = await startBenchCache(repo, deps, dir, 2);
  const poolFull = () => server.waitFull();
  const cachedEnv = server.env;
  try {
    const hot: number[] = [];
    // Each run appends its phase breakdown (process start to exit, host and guest) here.
    const phaseFile = `${dir}/hot.phases`;
    for (let i = 0; i < n; i++) {
      await poolFull();
      log(`vmcache run (from the cache) ${i + 1}`);
      hot.push(await run({ ...cachedEnv, VMCACHE_PHASES: phaseFile }, `hot${i}`));
    }
    rows.push({
      name: '`vmcache run` busybox /bin/true, from the cache (pool full)',
      unit: 'ms',
      summary: summarize(hot),
      phases: phaseTable(await readPhaseFile(phaseFile, 'run')),
    });
    // The cost of the share's cache mode (cache=mmap: writes reach the host as they return, reads are not
    // cached in the guest): a write-heavy and a read-heavy container, each from process start to exit.
    const vol = `${dir}/vol`;
    mkdirSync(vol, { recursive: true });
    const io = (name: string, script: string) =>
      busyboxBundle(`${dir}/${name}`, rootfs, {
        args: ['sh', '-c', script],
        mounts: [{ destination: '/vol', type: 'bind', source: vol, options: ['rbind', 'rw'] }],
      });
    const writer = io(
      'writer',
      'dd if=/dev/zero of=/vol/big bs=64k count=256 2>/dev/null; mkdir -p /vol/m; i=0; ' +
        'while [ $i -lt 500 ]; do echo $i > /vol/m/f$i; i=$((i+1)); done',
    );
    const reader = io(
      'reader',
      'i=0; while [ $i -lt 50 ]; do cat /bin/busybox > /dev/null; i=$((i+1)); done',
    );
    for (const [label, b] of [
      ['writing 16 MiB and 500 small files to a volume', writer],
      ['reading its 2 MiB busybox 50 times through the share', reader],
    ] as const) {
      const times: number[] = [];
      for (let i = 0; i < Math.max(2, Math.ceil(n / 2)); i++) {
        await poolFull();
        log(`vmcache run ${label} ${i + 1}`);
        times.push(
          await timed(vmcache, ['--root', `${dir}/root`, 'run', '--bundle', b, `io${i}`], cachedEnv),
        );
      }
      rows.push({
        name: `\`vmcache run\` of a container ${label}, from the cache`,
        unit: 'ms',
        summary: summarize(times),
      });
    }
    await poolFull();
    await timed(vmcache, ['--root', `${dir}/root`, 'create', '--bundle', bundle, 'st'], cachedEnv);
    const states: number[] = [];
    for (let i = 0; i < 10; i++)
      states.push(await timed(vmcache, ['--root', `${dir}/root`, 'state', 'st'], cachedEnv));
    rows.push({
      name: 'CLI start-up of a trivial verb (`vmcache state`)',
      unit: 'ms',
      summary: summarize(states),
    });
    await timed(vmcache, ['--root', `${dir}/root`, 'delete', '--force', 'st'], cachedEnv);
  } finally {
    await server.stop();
  }
  for (const [rt, extra] of [
    ['runc', []],
    ['crun', ['--cgroup-manager=disabled']],
  ] as const) {
    const times: number[] = [];
    try {
      for (let i = 0; i < 10; i++)
        times.push(
          await timed(
            rt,
            [...extra, '--root', `${dir}/${rt}`, 'run', '--bundle', bundle, `${rt}${i}`],
            process.env,
          ),
        );
      rows.push({
        name: `\`${rt} run\` busybox /bin/true (no VM, reference)`,
        unit: 'ms',
        summary: summarize(times),
      });
    } catch (err) {
      log(`${rt} unavailable here: ${(err as Error).message.split('\n')[0]}`);
      rows.push({
        name: `\`${rt} run\` busybox /bin/true: failed on this host (${(err as Error).message.split('\n').pop()})`,
        unit: 'ms',
        summary: summarize([Number.NaN]),
      });
    }
  }
  rmSync(dir, { recursive: true, force: true });
  return rows;
}
