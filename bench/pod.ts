/** The pod rows of `npm run bench`: bringing a pod's network namespace into a VM taken from the cache. */
import { execFileSync } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { VmFactory } from '../src/factory/factory.js';
import { PhaseRecorder, type PhaseReport } from '../src/platform/phases.js';
import { UndoStack } from '../src/platform/undo-stack.js';
import { connectPodNetwork, disconnectPodNetwork } from '../src/sandbox/network.js';
import type { VmDeps } from '../src/vm/vm.js';
import type { Row } from './cache.js';
import { phaseTable } from './phases.js';
import { startBenchCache } from './server.js';
import { summarize } from './stats.js';

const sh = (cmd: string) => execFileSync('sh', ['-c', cmd], { stdio: ['ignore', 'pipe', 'pipe'] });

/**
 * Time to connect a pod's network namespace (one veth interface, 198.18.0.0/15) to a VM from the cache: tap,
 * QMP netdev_add + device_add of a virtio-net NIC, tc mirred both ways, and the guest agent configuring the NIC
 * once it appears. Then a ping from the guest proves the path. The row carries the phase breakdown of each
 * connection (host commands, QMP, tc, and the agent's net op with the guest's wait for the NIC and its set-up).
 */
export async function podRows(
  repo: string,
  deps: VmDeps,
  n: number,
  log: (s: string) => void,
): Promise<Row[]> {
  const dir = '/tmp/vmc-bench-pod';
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  writeFileSync(`${dir}/c.toml`, `[factory]\nvm_cache_number = 1\nvm_cache_endpoint = "${dir}/cache.sock"\n`);
  const _env = { ...process.env, VMCACHE_CONFIG: `${dir}/c.toml`, VMCACHE_RUN_DIR: deps.paths.runDir };
  const pod = 'vmcbenchpod';
  const peer = 'vmcbenchpeer';
  sh(`ip netns del ${pod} 2>/dev/null; ip netns del ${peer} 2>/dev/null; true`);
  sh(
    [
      `ip netns add ${pod}`,
      `ip netns add ${peer}`,
      'ip link add vmcbA type veth peer name vmcbB',
      `ip link set vmcbA netns ${pod}`,
      `ip link set vmcbB netns ${peer}`,
      `ip -n ${pod} link set vmcbA name eth0`,
      `ip -n ${pod} addr add 198.18.0.2/24 dev eth0`,
      `ip -n ${pod} link set eth0 up`,
      `ip -n ${peer} addr add 198.18.0.1/24 dev vmcbB`,
      `ip -n ${peer} link set vmcbB up`,
    ].join(' && '),
  );
  log('starting a cache server with 1 slot for the pod rows');
  const server = await startBenchCache(repo, deps, dir, 1);
  const { remote } = server;
  const times: number[] = [];
  const breakdowns: PhaseReport[] = [];
  try {
    const factory = new VmFactory(remote, deps);
    for (let i = 0; i < n; i++) {
      await server.waitFull();
      log(`pod network into a cached VM ${i + 1}`);
      const { vm } = await factory.getVM(remote.config());
      const rec = new PhaseRecorder(deps.clock);
      const made = await connectPodNetwork(vm, `/var/run/netns/${pod}`, deps.run, new UndoStack(), rec);
      times.push(rec.elapsed());
      breakdowns.push(rec.report());
      const ping = await vm.run(['/bin/busybox', 'ping', '-c', '1', '-W', '10', '198.18.0.1']);
      if (ping.code !== 0) throw new Error(`ping from the guest failed: ${ping.stdout}${ping.stderr}`);
      await vm.destroy();
      await disconnectPodNetwork(made, deps.run);
    }
  } finally {
    await server.stop();
    sh(`ip netns del ${pod}; ip netns del ${peer}`);
    rmSync(dir, { recursive: true, force: true });
  }
  return [
    {
      name: 'bring a pod network namespace (1 NIC) into a VM from the cache (tap, hot-plug, tc, guest config)',
      unit: 'ms',
      summary: summarize(times),
      phases: phaseTable(breakdowns),
    },
  ];
}
