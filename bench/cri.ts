import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import type { VmDeps } from '../src/vm/vm.js';
import { BUSYBOX_IMAGE, type CriClient, startCriNode } from '../test/helpers/cri.js';
import type { Row } from './cache.js';
import { startBenchCache } from './server.js';
import { summarize } from './stats.js';

/**
 * What a kubelet waits for when it starts a pod: RunPodSandbox (sandbox VM, CNI network brought into it),
 * then CreateContainer and StartContainer of one busybox container, until StartContainer returns (the
 * container is running). The pod is stopped and removed afterwards, untimed.
 */
async function podStart(cri: CriClient, handler: string, name: string, logs: string): Promise<number> {
  const config = {
    metadata: { name, uid: `uid-${name}`, namespace: 'bench' },
    hostname: name,
    logDirectory: `${logs}/${name}`,
  };
  const t0 = performance.now();
  const { podSandboxId } = await cri.runPodSandbox({ config, runtimeHandler: handler });
  try {
    const { containerId } = await cri.createContainer({
      podSandboxId,
      sandboxConfig: config,
      config: {
        metadata: { name: 'app' },
        image: { image: BUSYBOX_IMAGE },
        command: ['sh', '-c', 'while :; do sleep 1; done'],
        logPath: 'app.log',
      },
    });
    await cri.startContainer({ containerId });
    return performance.now() - t0;
  } finally {
    await cri.stopPodSandbox({ podSandboxId });
    await cri.removePodSandbox({ podSandboxId });
  }
}

/**
 * Pod start through Debian's containerd 1.6 with its CRI plugin and CNI (bridge + host-local), vmcache as the
 * runtime handler: once with no cache (each pod's VM boots cold) and once with a cache server of 2 (measured
 * with the pool full); Debian's runc as the handler is the no-VM reference.
 */
export async function criRows(
  repo: string,
  deps: VmDeps,
  n: number,
  log: (s: string) => void,
): Promise<Row[]> {
  const dir = '/tmp/vmc-bench-cri';
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  const cold = `${dir}/cold.toml`;
  writeFileSync(cold, '[factory]\nvm_cache_number = 0\n');
  const coldEnv = { ...process.env, VMCACHE_CONFIG: cold, VMCACHE_RUN_DIR: deps.paths.runDir };
  const node = (env: NodeJS.ProcessEnv) =>
    startCriNode({ dir: `${dir}/node`, env, bridge: 'vmcbenchcri', subnet: '198.19.8.0/24' });
  const rows: Row[] = [];

  log('containerd (CRI) with vmcache, no cache');
  let cri = await node(coldEnv);
  try {
    const times: number[] = [];
    for (let i = 0; i < Math.max(2, Math.ceil(n / 3)); i++) {
      log(`CRI pod start, vmcache, no cache ${i + 1}`);
      times.push(await podStart(cri.cri, 'vmcache', `cold${i}`, `${dir}/logs`));
    }
    rows.push({
      name: 'pod start through CRI (RunPodSandbox → container running), vmcache, no cache (cold boot)',
      unit: 'ms',
      summary: summarize(times),
    });
  } finally {
    await cri.stop();
  }

  log('starting a cache server with 2 slots for the CRI rows');
  const server = await startBenchCache(repo, deps, dir, 2);
  try {
    cri = await node(server.env);
    try {
      const hot: number[] = [];
      for (let i = 0; i < n; i++) {
        await server.waitFull();
        log(`CRI pod start, vmcache, from the cache ${i + 1}`);
        hot.push(await podStart(cri.cri, 'vmcache', `hot${i}`, `${dir}/logs`));
      }
      rows.push({
        name: 'pod start through CRI (RunPodSandbox → container running), vmcache, from the cache (pool full)',
        unit: 'ms',
        summary: summarize(hot),
      });
      const base: number[] = [];
      for (let i = 0; i < n; i++) {
        log(`CRI pod start, runc ${i + 1}`);
        base.push(await podStart(cri.cri, 'runc', `runc${i}`, `${dir}/logs`));
      }
      rows.push({
        name: 'pod start through CRI (RunPodSandbox → container running), runc (no VM, reference)',
        unit: 'ms',
        summary: summarize(base),
      });
    } finally {
      await cri.stop();
    }
  } finally {
    await server.stop();
  }
  rmSync(dir, { recursive: true, force: true });
  return rows;
}
