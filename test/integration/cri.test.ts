import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { mountsUnder } from '../../src/platform/mounts.js';
import { startCacheServer } from '../helpers/cache-server.js';
import { run, VMCACHE } from '../helpers/cli.js';
import { ContainerState, PodSandboxState } from '../helpers/cri/generated/cri/api.js';
import { BUSYBOX_IMAGE, type CriClient, type CriNode, startCriNode } from '../helpers/cri.js';
import { exitCode, streamExec } from '../helpers/cri-stream.js';
import { runtimeEnv } from '../helpers/runtime-cli.js';
import { pidsMentioning, vmDirsLeft } from '../helpers/vm-env.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const SUBNET = '198.19.7.0/24';
const GATEWAY = '198.19.7.1';

/**
 * Kubernetes' path, without a kubelet: a CRI client drives Debian's containerd (CRI plugin, CNI bridge +
 * host-local, a locally imported image) whose `vmcache` runtime handler runs pods in VMs from the cache.
 */
describe('Kubernetes CRI: containerd runs pods in VMs from the cache (real QEMU)', () => {
  const { env, cfg, endpoint, cliEnv } = runtimeEnv();
  let server: Awaited<ReturnType<typeof startCacheServer>>;
  let node: CriNode;
  let cri: CriClient;

  /** VMs that containers hold (not the pool's). */
  const containerVms = async () =>
    (
      JSON.parse((await run(VMCACHE, ['vm', 'list', '--json'], cliEnv)).stdout) as Array<{
        owner: number | null;
      }>
    ).filter((v) => v.owner !== null && v.owner !== server.pid);
  const netnsList = async () => (await run('ip', ['netns', 'list'], cliEnv)).stdout;

  /** A pod sandbox of `handler`, with its log directory in the test's directory. */
  const podConfig = (name: string) => ({
    metadata: { name, uid: `uid-${name}`, namespace: 'default', attempt: 0 },
    hostname: name,
    logDirectory: join(env.runDir, 'logs', name),
  });
  const runPod = async (name: string, handler: string) => {
    const { podSandboxId } = await cri.runPodSandbox({ config: podConfig(name), runtimeHandler: handler });
    return podSandboxId;
  };
  const createContainer = async (pod: string, podName: string, name: string, script: string, memory = 0) => {
    const { containerId } = await cri.createContainer({
      podSandboxId: pod,
      sandboxConfig: podConfig(podName),
      config: {
        metadata: { name, attempt: 0 },
        image: { image: BUSYBOX_IMAGE },
        command: ['sh', '-c', script],
        envs: [{ key: 'POD_CONTAINER', value: name }],
        logPath: `${name}.log`,
        linux: { resources: { memoryLimitInBytes: memory } },
      },
    });
    return containerId;
  };
  const exec = async (id: string, cmd: string[]) => {
    const r = await cri.execSync({ containerId: id, cmd, timeout: 60 });
    return { code: r.exitCode, stdout: r.stdout.toString(), stderr: r.stderr.toString() };
  };
  const state = async (id: string) =>
    (await cri.containerStatus({ containerId: id, verbose: false })).status!;

  before(async () => {
    writeFileSync(cfg, `[factory]\nvm_cache_number = 2\nvm_cache_endpoint = "${endpoint}"\n`);
    server = await startCacheServer(cliEnv, endpoint);
    node = await startCriNode({
      dir: join(env.runDir, 'node'),
      env: cliEnv,
      bridge: `vmccri${process.pid % 100000}`,
      subnet: SUBNET,
    });
    cri = node.cri;
  });

  after(async () => {
    await node.stop(); // drains the node: any pod a failed test left is stopped and removed
    await server.stop();
    assert.deepEqual(mountsUnder(env.runDir), [], 'mounts left behind');
    assert.deepEqual(vmDirsLeft(env.runDir), [], 'VMs left behind');
    env.cleanup();
  });

  /**
   * What only the shim v2 path serves (the runc-CLI path has no fd passing for a terminal, and runc's shim
   * would read the host process's cgroup for stats): `kubectl exec -it` (a streaming exec with a tty and a
   * resize), UpdateContainerResources, and the kubelet's container stats.
   */
  const shimV2Extras = async (pod: string, c1: string, c2: string) => {
    // containerd applies the first resize after the process starts: the shell waits for it (at most 10 s).
    const wait = 'i=0; until [ "$(stty size)" = "33 101" ] || [ $i -ge 100 ]; do sleep 0.1; i=$((i+1)); done';
    const cmd = ['sh', '-c', `tty; ${wait}; echo "size $(stty size)"`];
    const { url } = await cri.exec({
      containerId: c1,
      cmd,
      tty: true,
      stdin: true,
      stdout: true,
      stderr: false,
    });
    const tty = await streamExec(url, { resize: { rows: 33, cols: 101 }, deadlineMs: 60_000 });
    assert.match(tty.stdout, /^\/dev\/pts\/\d+\r\n/, 'a pty in the guest');
    assert.match(tty.stdout, /size 33 101\r\n$/, 'sized by the resize');
    assert.equal(exitCode(tty.status), 0);

    await cri.updateContainerResources({
      containerId: c1,
      linux: { memoryLimitInBytes: 320 * 2 ** 20, cpuQuota: 50_000, cpuPeriod: 100_000, cpuShares: 512 },
    });
    const limits = await exec(c1, ['cat', '/sys/fs/cgroup/memory.max', '/sys/fs/cgroup/cpu.max']);
    assert.equal(limits.stdout, `${320 * 2 ** 20}\n50000 100000\n`, 'the new limits, in the guest');

    const stats = async (id: string) => (await cri.containerStats({ containerId: id })).stats!;
    const before = await stats(c1);
    assert.ok((before.memory?.workingSetBytes?.value ?? 0n) > 0n, 'a working set');
    assert.ok((before.cpu?.usageCoreNanoSeconds?.value ?? 0n) > 0n, 'CPU time');
    await exec(c1, ['sh', '-c', 'i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done']);
    const afterLoad = await stats(c1);
    assert.ok(
      afterLoad.cpu!.usageCoreNanoSeconds!.value > before.cpu!.usageCoreNanoSeconds!.value,
      'CPU time grows with load',
    );
    const list = await cri.listContainerStats({ filter: { id: '', podSandboxId: pod } });
    assert.deepEqual(
      list.stats.map((x) => x.attributes?.id).sort(),
      [c1, c2].sort(),
      "the pod's two containers",
    );
  };

  /**
   * One pod's life through `handler`: `vmcache` (containerd's runc shim running the vmcache CLI) or
   * `vmcache-v2` (vmcache's shim v2 daemon); `records` is where that path keeps its containers' records.
   */
  const podLife = async (handler: string, name: string, records: string, running = () => {}) => {
    const pod = await runPod(name, handler);
    const status = (await cri.podSandboxStatus({ podSandboxId: pod, verbose: false })).status!;
    assert.equal(status.state, PodSandboxState.SANDBOX_READY);
    const ip = status.network?.ip ?? '';
    assert.match(ip, /^198\.19\.7\.\d+$/, 'CNI gave the pod an address');
    assert.equal((await containerVms()).length, 1, "the sandbox's VM");

    const loop = 'echo "$POD_CONTAINER up"; trap "exit 0" TERM; while :; do sleep 1; done';
    const c1 = await createContainer(pod, name, 'app', loop, 256 * 1024 * 1024);
    const c2 = await createContainer(pod, name, 'sidecar', loop);
    await Promise.all([c1, c2].map((id) => cri.startContainer({ containerId: id })));
    for (const id of [c1, c2]) assert.equal((await state(id)).state, ContainerState.CONTAINER_RUNNING);
    assert.equal((await containerVms()).length, 1, 'the containers joined the VM: no new one');
    running();

    // Both containers see the same (guest) kernel instance; the pod's interface is in the VM, with the
    // address CNI gave, and reaches the node's bridge.
    const boot = await Promise.all(
      [c1, c2].map(async (id) => (await exec(id, ['cat', '/proc/sys/kernel/random/boot_id'])).stdout),
    );
    assert.equal(boot[0], boot[1]);
    assert.notEqual(boot[0], readFileSync('/proc/sys/kernel/random/boot_id', 'utf8'), 'not the host kernel');
    const net = await exec(c1, ['sh', '-c', `uname -r; ip -4 addr show eth0; ping -c 1 -W 5 ${GATEWAY}`]);
    assert.equal(net.code, 0, net.stdout + net.stderr);
    assert.match(net.stdout, /-amd64\n/);
    assert.match(net.stdout, new RegExp(`inet ${ip.replaceAll('.', '\\.')}/24`));
    assert.match(net.stdout, /1 packets received/);
    const limit = await exec(c1, ['sh', '-c', 'cat /sys/fs/cgroup/memory.max; grep MemTotal /proc/meminfo']);
    const [max, total] = limit.stdout.trim().split('\n');
    assert.equal(max, String(256 * 1024 * 1024), "the container's memory limit, in the guest");
    const kib = Number(/MemTotal:\s+(\d+)/.exec(total!)![1]);
    assert.ok(
      kib > 600 * 1024,
      `the pod VM (512 MiB: MemTotal ~450 MiB) grew by the container's 256 MiB (MemTotal ${kib} KiB)`,
    );
    if (handler === 'vmcache-v2') await shimV2Extras(pod, c1, c2);
    const failed = await exec(c2, ['sh', '-c', 'echo to-stderr >&2; exit 3']);
    assert.deepEqual([failed.code, failed.stderr], [3, 'to-stderr\n']);

    // containerd writes each container's stdout to its CRI log file.
    const log = (await state(c2)).logPath;
    assert.match(readFileSync(log, 'utf8'), /stdout F sidecar up/);

    await cri.stopContainer({ containerId: c1, timeout: 10 });
    const stopped = await state(c1);
    assert.deepEqual([stopped.state, stopped.exitCode], [ContainerState.CONTAINER_EXITED, 0]);
    assert.equal((await state(c2)).state, ContainerState.CONTAINER_RUNNING, 'the other container runs on');

    await cri.stopPodSandbox({ podSandboxId: pod });
    assert.equal(
      (await state(c2)).state,
      ContainerState.CONTAINER_EXITED,
      'stopping the pod stops its containers',
    );
    for (let i = 0; (await containerVms()).length > 0; i++) {
      if (i > 100) assert.fail(`the VM outlived its pod: ${node.errors().join('\n')}`);
      await sleep(100);
    }
    await cri.removePodSandbox({ podSandboxId: pod });
    assert.deepEqual(existsSync(records) ? readdirSync(records) : [], [], 'no container state left');
    assert.doesNotMatch(await netnsList(), new RegExp(pod.slice(0, 12)), "the pod's namespace is gone");
    // containerd calls vmcache on its own too (kill --all when a container's init exits, kill before delete):
    // none of those calls failed.
    assert.deepEqual(node.errors(), []);
  };

  it('a pod with two containers and a CNI network runs in one VM: exec, status, logs, limits, stop, remove', async () => {
    await podLife('vmcache', 'web', join(node.vmcacheRoot, 'k8s.io', 'containers'));
  });

  it('the same pod through the shim v2 handler (vmcache-v2): one daemon per pod, the same behaviour', async () => {
    const daemons = () => pidsMentioning('containerd-shim-vmcache-v2.mjs');
    const before = daemons().length;
    await podLife('vmcache-v2', 'web2', join(env.runDir, 'shim', 'k8s.io', 'containers'), () =>
      assert.equal(daemons().length, before + 1, 'one shim daemon serves the sandbox and both containers'),
    );
    // The daemon exits with its pod (containerd's Shutdown once the last task is deleted).
    for (let i = 0; daemons().length > before; i++) {
      if (i > 100) assert.fail('the shim daemon outlived its pod');
      await sleep(100);
    }
  });

  it('the same pod through the runc handler (the baseline) runs on the host kernel', async () => {
    const pod = await runPod('base', 'runc');
    const c = await createContainer(pod, 'base', 'app', 'while :; do sleep 1; done');
    await cri.startContainer({ containerId: c });
    const r = await exec(c, ['cat', '/proc/sys/kernel/random/boot_id']);
    assert.equal(r.stdout, readFileSync('/proc/sys/kernel/random/boot_id', 'utf8'));
    assert.equal((await containerVms()).length, 0);
    await cri.stopPodSandbox({ podSandboxId: pod });
    await cri.removePodSandbox({ podSandboxId: pod });
  });
});
