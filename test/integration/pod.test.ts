import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { spareTapName } from '../../src/hypervisor/qemu/tap-names.js';
import { mountsUnder } from '../../src/platform/mounts.js';
import { busyboxBundle, busyboxRootfs } from '../helpers/bundle.js';
import { startCacheServer } from '../helpers/cache-server.js';
import { run, VMCACHE } from '../helpers/cli.js';
import { runtimeEnv } from '../helpers/runtime-cli.js';
import { vmDirsLeft } from '../helpers/vm-env.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const TYPE = 'io.kubernetes.cri.container-type';
const SANDBOX = 'io.kubernetes.cri.sandbox-id';

describe('pods: containers join their sandbox VM (CRI annotations, real QEMU)', () => {
  const { env, root, cfg, endpoint, cliEnv, vmc, vmcToFile } = runtimeEnv();
  let rootfs: string;
  let server: Awaited<ReturnType<typeof startCacheServer>>;
  const status = async (id: string) =>
    (JSON.parse((await vmc(['state', id])).stdout) as { status: string }).status;
  const until = async (what: string, pred: () => boolean | Promise<boolean>, ms = 30_000) => {
    const deadline = Date.now() + ms;
    while (!(await pred())) {
      if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
      await sleep(100);
    }
  };
  /** VMs that containers hold (not the pool's). */
  const containerVms = async () =>
    (
      JSON.parse((await run(VMCACHE, ['vm', 'list', '--json'], cliEnv)).stdout) as Array<{
        owner: number | null;
      }>
    ).filter((v) => v.owner !== null && v.owner !== server.pid);
  const bundle = (name: string, args: string[], annotations: Record<string, string>) =>
    busyboxBundle(join(env.runDir, 'bundles', name), rootfs, { args, annotations, hostname: name });

  before(async () => {
    rootfs = busyboxRootfs(join(env.runDir, 'busybox'));
    writeFileSync(cfg, `[factory]\nvm_cache_number = 2\nvm_cache_endpoint = "${endpoint}"\n`);
    server = await startCacheServer(cliEnv, endpoint);
  });

  const cleanups: Array<() => Promise<unknown>> = [];
  after(async () => {
    for (const c of cleanups) await c();
    const dir = join(root, 'containers');
    for (const id of existsSync(dir) ? readdirSync(dir) : []) await vmc(['delete', '--force', id]);
    await server.stop();
    assert.deepEqual(mountsUnder(env.runDir), [], 'mounts left behind');
    assert.deepEqual(vmDirsLeft(env.runDir), [], 'VMs left behind');
    env.cleanup();
  });

  it('a sandbox and two members created at once share one VM; exec reaches a member; the sandbox takes them down', async () => {
    const out = (id: string) => join(env.runDir, `${id}.out`);
    const sb = bundle('sb', ['sh', '-c', 'echo sandbox-up; while :; do sleep 1; done'], {
      [TYPE]: 'sandbox',
      [SANDBOX]: 'sb1',
    });
    assert.equal(
      await vmcToFile(['run', '-d', '--bundle', sb, 'sb1'], out('sb1')),
      0,
      readFileSync(out('sb1'), 'utf8'),
    );
    const member = (name: string) =>
      bundle(name, ['sh', '-c', 'cat /proc/sys/kernel/random/boot_id; hostname; while :; do sleep 1; done'], {
        [TYPE]: 'container',
        [SANDBOX]: 'sb1',
      });
    const codes = await Promise.all(
      ['m1', 'm2'].map((id) => vmcToFile(['run', '-d', '--bundle', member(id), id], out(id))),
    );
    assert.deepEqual(codes, [0, 0], readFileSync(out('m1'), 'utf8') + readFileSync(out('m2'), 'utf8'));
    const vms = (await containerVms()) as unknown as Array<{ id: string }>;
    assert.equal(vms.length, 1, 'one VM for the whole pod');
    // No network namespace: the VM's spare NIC lost its backend (QEMU closed the tap, which went with it).
    assert.equal(existsSync(`/sys/class/net/${spareTapName(vms[0]!.id)}`), false, 'spare tap released');
    await until('both members printed', () =>
      ['m1', 'm2'].every((id) => readFileSync(out(id), 'utf8').split('\n').length >= 3),
    );
    const sandboxBoot = (
      await vmc(['exec', 'sb1', '--', 'cat', '/proc/sys/kernel/random/boot_id'])
    ).stdout.trim();
    for (const id of ['m1', 'm2']) {
      const [boot, host] = readFileSync(out(id), 'utf8').split('\n');
      assert.equal(boot, sandboxBoot, `${id} runs in the sandbox's VM`);
      assert.equal(host, id, `${id} has its own UTS namespace`);
    }
    const ex = await vmc(['exec', 'm1', '--', 'sh', '-c', 'hostname; exit 3']);
    assert.equal(ex.code, 3, ex.stderr);
    assert.equal(ex.stdout, 'm1\n', 'exec joins the member, not the sandbox');
    const pause = await vmc(['pause', 'm1']);
    assert.notEqual(pause.code, 0);
    assert.match(pause.stderr, /shares the VM of sandbox sb1: pause the sandbox instead/);

    assert.equal((await vmc(['kill', 'sb1', 'KILL'])).code, 0);
    await until('the members stopped with their sandbox', async () =>
      (await Promise.all(['sb1', 'm1', 'm2'].map(status))).every((s) => s === 'stopped'),
    );
    for (const id of ['m1', 'm2', 'sb1']) assert.equal((await vmc(['delete', id])).code, 0);
    assert.deepEqual(await containerVms(), []);
    assert.deepEqual(mountsUnder(join(env.runDir, 'vm')), []);
  });

  it("a member's writes to a volume are on the host when its sandbox stops; CRI's namespace paths share the sandbox's IPC and UTS", async () => {
    const sb = bundle('sbw', ['sh', '-c', 'while :; do sleep 1; done'], {
      [TYPE]: 'sandbox',
      [SANDBOX]: 'sbw',
    });
    assert.equal(await vmcToFile(['run', '-d', '--bundle', sb, 'sbw'], join(env.runDir, 'sbw.out')), 0);
    const sandboxPid = (JSON.parse((await vmc(['state', 'sbw'])).stdout) as { pid: number }).pid;
    const vol = join(env.runDir, 'pod-vol');
    mkdirSync(vol, { recursive: true });
    const mw = busyboxBundle(join(env.runDir, 'bundles', 'mw'), rootfs, {
      args: [
        'sh',
        '-c',
        '(readlink /proc/self/ns/ipc; readlink /proc/self/ns/uts) > /vol/ns; ' +
          '(test -e /proc/1/root/run/vmcache/shared && echo reached || echo confined; cat /proc/1/comm) > /vol/confined; dd if=/dev/urandom of=/vol/big bs=64k count=64 2>/dev/null; ' +
          'md5sum /vol/big | cut -d" " -f1 > /vol/sum; touch /vol/done; while :; do sleep 1; done',
      ],
      annotations: { [TYPE]: 'container', [SANDBOX]: 'sbw' },
      hostname: 'sbw', // containerd gives members the pod's hostname
      mounts: [{ destination: '/vol', type: 'bind', source: vol, options: ['rbind', 'rw'] }],
    });
    // As containerd's CRI plugin writes a member's spec: the sandbox's IPC and UTS namespaces by path.
    const spec = JSON.parse(readFileSync(join(mw, 'config.json'), 'utf8'));
    spec.linux.namespaces = spec.linux.namespaces.map((n: { type: string }) =>
      n.type === 'ipc' || n.type === 'uts' ? { type: n.type, path: `/proc/${sandboxPid}/ns/${n.type}` } : n,
    );
    writeFileSync(join(mw, 'config.json'), JSON.stringify(spec));
    const out = join(env.runDir, 'mw.out');
    assert.equal(await vmcToFile(['run', '-d', '--bundle', mw, 'mw'], out), 0, readFileSync(out, 'utf8'));
    await until('the member wrote', () => existsSync(join(vol, 'done')));
    const sbNs = await vmc([
      'exec',
      'sbw',
      '--',
      'sh',
      '-c',
      'readlink /proc/self/ns/ipc; readlink /proc/self/ns/uts',
    ]);
    assert.equal(sbNs.code, 0, sbNs.stderr);
    assert.equal(
      readFileSync(join(vol, 'ns'), 'utf8'),
      sbNs.stdout,
      "the member is in the sandbox's IPC and UTS namespaces",
    );
    // Its own PID namespace and a pivot_root'ed root: the guest's root (the share, the other containers'
    // roots and binds) is out of its reach, and its PID 1 is its own process.
    assert.equal(
      readFileSync(join(vol, 'confined'), 'utf8'),
      'confined\nsh\n', // the guest's PID 1 is its init; this is the member's own shell
      'a member cannot reach the guest root through /proc/1/root',
    );
    assert.equal((await vmc(['kill', 'sbw', 'KILL'])).code, 0);
    await until('the pod stopped', async () =>
      (await Promise.all(['sbw', 'mw'].map(status))).every((st) => st === 'stopped'),
    );
    assert.equal(
      createHash('md5')
        .update(readFileSync(join(vol, 'big')))
        .digest('hex'),
      readFileSync(join(vol, 'sum'), 'utf8').trim(),
      'every byte the member wrote is on the host',
    );
    for (const id of ['mw', 'sbw']) assert.equal((await vmc(['delete', id])).code, 0);
  });

  it('kill --all reaches what a member left behind after its main process exited; nothing once the VM is gone', async () => {
    const sb = bundle('sbk', ['sh', '-c', 'while :; do sleep 1; done'], {
      [TYPE]: 'sandbox',
      [SANDBOX]: 'sbk',
    });
    assert.equal(await vmcToFile(['run', '-d', '--bundle', sb, 'sbk'], join(env.runDir, 'sbk.out')), 0);
    const member = bundle('mk', ['sh', '-c', 'sleep 321 & exit 0'], {
      [TYPE]: 'container',
      [SANDBOX]: 'sbk',
    });
    // The pod shares its process namespace (CRI's shareProcessNamespace: the sandbox's by path), so the
    // member's orphan outlives its main process; in a PID namespace of its own, it would die with it.
    const sbkPid = (JSON.parse((await vmc(['state', 'sbk'])).stdout) as { pid: number }).pid;
    const mkSpec = JSON.parse(readFileSync(join(member, 'config.json'), 'utf8'));
    mkSpec.linux.namespaces = mkSpec.linux.namespaces.map((n: { type: string }) =>
      n.type === 'pid' ? { type: 'pid', path: `/proc/${sbkPid}/ns/pid` } : n,
    );
    writeFileSync(join(member, 'config.json'), JSON.stringify(mkSpec));
    assert.equal(await vmcToFile(['run', '-d', '--bundle', member, 'mk'], join(env.runDir, 'mk.out')), 0);
    await until('the member exited', async () => (await status('mk')) === 'stopped');
    // The PID namespace is the pod's: the sandbox sees the member's orphan.
    const orphans = async () => {
      const r = await vmc(['exec', 'sbk', '--', 'sh', '-c', "ps -o args | grep -cx 'sleep 321' || true"]);
      assert.equal(r.code, 0, r.stderr);
      return r.stdout.trim();
    };
    assert.equal(await orphans(), '1', 'the orphan outlived its container');
    const late = await vmc(['kill', 'mk', 'KILL']);
    assert.match(late.stderr, /container not running/, 'without --all: runc refuses, in its words');
    assert.equal((await vmc(['kill', '--all', 'mk', 'KILL'])).code, 0);
    await until('the orphan was killed', async () => (await orphans()) === '0');
    // A member on the same host directory as the sandbox's root comes and goes: the sandbox's root stays usable
    // (the guest sees one directory through both; the member's binds stay until the VM goes).
    const brief = bundle('mk2', ['true'], { [TYPE]: 'container', [SANDBOX]: 'sbk' });
    const r2 = await vmc(['run', '--bundle', brief, 'mk2']); // runs, exits, and is deleted, as with runc
    assert.equal(r2.code, 0, r2.stderr);
    assert.equal(await orphans(), '0', 'exec into the sandbox still works');
    assert.equal((await status('sbk')) === 'running', true, 'the sandbox is untouched');
    assert.equal((await vmc(['kill', 'sbk', 'KILL'])).code, 0);
    await until('the sandbox stopped', async () => (await status('sbk')) === 'stopped');
    assert.equal((await vmc(['kill', '--all', 'mk', 'KILL'])).code, 0, 'the VM is gone: nothing to kill');
    for (const id of ['mk', 'sbk']) assert.equal((await vmc(['delete', id])).code, 0);
  });

  it("the sandbox's network namespace reaches the VM: tap + tc mirred + a hot-plugged NIC with the same MAC, MTU, addresses and routes", async () => {
    const pod = `vmcpod${process.pid}`;
    const peer = `vmcpeer${process.pid}`;
    const sh = (cmd: string) => run('sh', ['-c', cmd], process.env);
    cleanups.push(() => sh(`ip netns del ${pod}; ip netns del ${peer}`));
    // Addresses from 198.18.0.0/15 (the benchmarking range); traffic stays between these namespaces and the guest.
    const setup = await sh(
      [
        `ip netns add ${pod}`,
        `ip netns add ${peer}`,
        `ip link add vmcA${process.pid % 1000} type veth peer name vmcB${process.pid % 1000}`,
        `ip link set vmcA${process.pid % 1000} netns ${pod}`,
        `ip link set vmcB${process.pid % 1000} netns ${peer}`,
        `ip -n ${pod} link set vmcA${process.pid % 1000} name eth0`,
        `ip -n ${pod} addr add 198.18.0.2/24 dev eth0`,
        `ip -n ${pod} addr add 2001:db8:5::2/64 dev eth0 nodad`,
        `ip -n ${pod} link set eth0 mtu 1400 up`,
        `ip -n ${pod} route add 198.19.0.0/24 via 198.18.0.1`,
        `ip -n ${peer} addr add 198.18.0.1/24 dev vmcB${process.pid % 1000}`,
        `ip -n ${peer} link set vmcB${process.pid % 1000} up`,
      ].join(' && '),
    );
    assert.equal(setup.code, 0, setup.stderr);
    const mac = JSON.parse((await sh(`ip -n ${pod} -j link show eth0`)).stdout)[0].address as string;
    const b = busyboxBundle(join(env.runDir, 'bundles', 'net'), rootfs, {
      args: ['sh', '-c', 'ip -o addr show; ip -o link show; ip route; ping -c 1 -W 10 198.18.0.1'],
      netns: `/var/run/netns/${pod}`,
    });
    const r = await vmc(['run', '--bundle', b, 'net1']);
    assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`);
    assert.match(r.stdout, /inet 198\.18\.0\.2\/24/);
    assert.match(r.stdout, /inet6 2001:db8:5::2\/64/, 'the IPv6 address too');
    assert.match(r.stdout, /eth\d: .* mtu 1400 /, "the interface's MTU");
    assert.match(r.stdout, /198\.19\.0\.0\/24 via 198\.18\.0\.1 dev eth\d/, "the namespace's route");
    assert.ok(r.stdout.includes(mac), 'the guest NIC has the MAC of the pod interface');
    assert.match(r.stdout, /1 packets received/);
    const links = JSON.parse((await sh(`ip -n ${pod} -j link show`)).stdout) as Array<{ ifname: string }>;
    assert.deepEqual(links.map((l) => l.ifname).sort(), ['eth0', 'lo'], 'taps removed with the container');
    const qdiscs = (await sh(`tc -n ${pod} qdisc show dev eth0`)).stdout;
    assert.doesNotMatch(qdiscs, /ingress/, 'filters removed');
  });

  it('linux.resources: the VM grows by the memory limit; memory, CPU and pids limits hold in the guest cgroup', async () => {
    const b = busyboxBundle(join(env.runDir, 'bundles', 'res'), rootfs, {
      args: [
        'sh',
        '-c',
        'cat /proc/self/cgroup; cd /sys/fs/cgroup; cat memory.max cpu.max pids.max; grep MemTotal /proc/meminfo',
      ],
      resources: {
        memory: { limit: 256 * 1024 * 1024 },
        cpu: { quota: 50000, period: 100000 },
        pids: { limit: 64 },
      },
    });
    const r = await vmc(['run', '--bundle', b, 'res1']);
    assert.equal(r.code, 0, r.stderr);
    const [cgroup, mem, cpu, pids, total] = r.stdout.trim().split('\n');
    assert.equal(cgroup, '0::/', "the container's own cgroup namespace: its leaf is its root");
    assert.equal(mem, String(256 * 1024 * 1024));
    assert.equal(cpu, '50000 100000');
    assert.equal(pids, '64');
    const kib = Number(/MemTotal:\s+(\d+)/.exec(total!)![1]);
    assert.ok(kib > 600 * 1024, `the VM grew from 512 MiB by the 256 MiB limit (MemTotal ${kib} KiB)`);
  });

  it('a member of a sandbox that does not exist, or is stopped, is refused and nothing is created', async () => {
    const ghost = bundle('ghost', ['true'], { [TYPE]: 'container', [SANDBOX]: 'nope' });
    const r = await vmc(['create', '--bundle', ghost, 'g1']);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /sandbox nope .* does not exist.*VMC_ERR_CONTAINER_NOT_FOUND/);
    assert.equal(existsSync(join(root, 'containers', 'g1')), false);
    const noId = busyboxBundle(join(env.runDir, 'bundles', 'noid'), rootfs, {
      args: ['true'],
      annotations: { [TYPE]: 'container' },
    });
    const r2 = await vmc(['create', '--bundle', noId, 'g2']);
    assert.notEqual(r2.code, 0);
    assert.match(r2.stderr, /needs a sandbox id annotation/);
  });
});
