import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { after, before, describe, it } from 'node:test';
import { isVmcError } from '../../src/errors.js';
import { VmFactory } from '../../src/factory/factory.js';
import { RemoteCacheFactory } from '../../src/factory/remote-cache.js';
import { isAlive } from '../../src/platform/process.js';
import type { GrpcStatus } from '../../src/protocol/cache/generated/cache.js';
import { listVmDirs, readRecord } from '../../src/vm/record.js';
import type { Vm } from '../../src/vm/vm.js';
import { FactoryInit } from '../helpers/cache-server.js';
import { run, VMCACHE } from '../helpers/cli.js';
import { IMAGE_DIR, vmEnv } from '../helpers/vm-env.js';

const SMALL = { cpus: 1, memoryMiB: 512 };
const BIG = { cpus: 2, memoryMiB: 768 };

/** vCPUs online and MemTotal (MiB) as the guest sees them. */
async function guestShape(vm: Vm): Promise<{ cpus: number; memoryMiB: number }> {
  const r = await vm.run(['sh', '-c', 'nproc; grep MemTotal /proc/meminfo']);
  const [n, mem] = r.stdout.toString().trim().split('\n');
  return { cpus: Number(n), memoryMiB: Math.round(Number(/(\d+)/.exec(mem!)![1]) / 1024) };
}

describe('pools per VM shape (vmcache factory init with [[cache.pool]], real QEMU)', () => {
  const env = vmEnv();
  const endpoint = `${env.runDir}/cache.sock`;
  const metricsSock = `${env.runDir}/metrics.sock`;
  const cfg = `${env.runDir}/configuration.toml`;
  const cliEnv = {
    ...process.env,
    VMCACHE_RUN_DIR: env.runDir,
    VMCACHE_IMAGE_DIR: IMAGE_DIR,
    VMCACHE_CONFIG: cfg,
  };
  const srv = new FactoryInit(cliEnv, endpoint, env.deps);
  let remote: RemoteCacheFactory;
  const status = (): Promise<GrpcStatus> => srv.status();
  const waitFor = srv.waitFor.bind(srv);
  const pool = (s: GrpcStatus, name: string) => s.pools.find((p) => p.name === name)!;
  const full = (s: GrpcStatus) => s.pools.every((p) => p.ready === p.target && p.booting === 0);

  before(async () => {
    // Two pools totalling 4 VMs: the default (Kata's: [hypervisor.qemu] shape, vm_cache_number) and a larger one.
    writeFileSync(
      cfg,
      `[factory]
vm_cache_number = 2
vm_cache_endpoint = "${endpoint}"

[cache]
lease_timeout = 5
health_interval = 1
metrics_endpoint = "${metricsSock}"

[[cache.pool]]
name = "big"
vcpus = ${BIG.cpus}
memory = ${BIG.memoryMiB}
min = 2
max = 2
`,
    );
    remote = await srv.start();
  });

  after(async () => {
    await srv.cleanup();
    await run(VMCACHE, ['vm', 'gc'], cliEnv);
    env.cleanup();
  });

  it('fills both pools, each with VMs of its own shape; status and factory status show each pool', async () => {
    const s = await waitFor('both pools full', full);
    assert.deepEqual(
      s.pools.map((p) => [p.name, p.cpu, p.memory, p.base, p.ready, p.target, p.min, p.max, p.targetReason]),
      [
        ['default', 1, 512, 'direct', 2, 2, 2, 2, 'fixed'],
        ['big', 2, 768, 'direct', 2, 2, 2, 2, 'fixed'],
      ],
    );
    assert.equal(s.target, 4, 'the sums are over the pools');
    assert.deepEqual(s.vmstatus.map((v) => `${v.cpu}x${v.memory}`).sort(), [
      '1x512',
      '1x512',
      '2x768',
      '2x768',
    ]);
    const text = await run(VMCACHE, ['factory', 'status'], cliEnv);
    assert.equal(text.code, 0, text.stderr);
    assert.match(text.stdout, /^big +2x768 +direct +2 +0 +2 \(fixed\)/m);
    const json = JSON.parse(
      (await run(VMCACHE, ['factory', 'status', '--json'], cliEnv)).stdout,
    ) as GrpcStatus;
    assert.deepEqual(
      json.pools.map((p) => p.name),
      ['default', 'big'],
    );
  });

  it('each request gets a VM of its own shape, seen inside the guest (nproc, MemTotal), with no hot-plug', async () => {
    await waitFor('both pools full', full);
    const factory = new VmFactory(remote, env.deps);
    const base = remote.config();
    const seen = new Map<number, { cpus: number; memoryMiB: number }>();
    for (const shape of [BIG, SMALL]) {
      const { vm } = await factory.getVM({ ...base, ...shape });
      try {
        seen.set(shape.memoryMiB, await guestShape(vm));
        assert.equal(vm.record.spec.cpus, shape.cpus, 'booted at that shape, not grown');
        assert.deepEqual(vm.record.hotplug, { cpus: 0, memoryMiB: 0 });
      } finally {
        await vm.destroy();
      }
    }
    const big = seen.get(BIG.memoryMiB)!;
    const small = seen.get(SMALL.memoryMiB)!;
    assert.deepEqual([big.cpus, small.cpus], [BIG.cpus, SMALL.cpus], 'nproc');
    // MemTotal is the RAM less what the kernel keeps (~120 MiB here): the two differ by the shapes' difference.
    const diff = big.memoryMiB - small.memoryMiB;
    assert.ok(
      Math.abs(diff - (BIG.memoryMiB - SMALL.memoryMiB)) < 32 && big.memoryMiB <= BIG.memoryMiB,
      `MemTotal ${big.memoryMiB} and ${small.memoryMiB} MiB for ${BIG.memoryMiB} and ${SMALL.memoryMiB} MiB`,
    );
    const s = await status();
    assert.ok(pool(s, 'big').hits >= 1 && pool(s, 'default').hits >= 1, JSON.stringify(s.pools));
  });

  it('10 clients × 10 concurrent requests against 4 VMs (miss policy fail): each VM to one client, usable; the rest VMC_ERR_CACHE_MISS', async () => {
    await waitFor('both pools full', full);
    const clients = await Promise.all(
      Array.from({ length: 10 }, () =>
        RemoteCacheFactory.connect(endpoint, env.deps, { missPolicy: 'fail' }),
      ),
    );
    try {
      const results = await Promise.allSettled(
        clients.flatMap((c, i) =>
          Array.from({ length: 10 }, (_, j) =>
            c
              .getBaseVM(undefined, { shape: (i + j) % 2 === 0 ? BIG : SMALL })
              .then((vm) => ({ vm, client: i })),
          ),
        ),
      );
      const served = results.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
      const failed = results.flatMap((r) => (r.status === 'rejected' ? [r.reason as unknown] : []));
      try {
        assert.equal(served.length + failed.length, 100);
        assert.ok(served.length >= 4, `the 4 ready VMs were all handed out (served ${served.length})`);
        assert.ok(
          failed.every((e) => isVmcError(e, 'VMC_ERR_CACHE_MISS')),
          `every other request got the fail policy's answer: ${failed.filter((e) => !isVmcError(e, 'VMC_ERR_CACHE_MISS')).map(String)}`,
        );
        assert.equal(new Set(served.map((s) => s.vm.id)).size, served.length, 'no VM handed out twice');
        for (const { vm } of served) {
          await vm.resume();
          assert.equal((await vm.run(['echo', 'mine'])).stdout.toString(), 'mine\n', `VM ${vm.id} usable`);
        }
      } finally {
        await Promise.all(served.map((s) => s.vm.destroy()));
      }
      const s = await status();
      assert.ok(s.missesFail >= 96 - (served.length - 4), `fail misses counted: ${s.missesFail}`);
      assert.equal(
        pool(s, 'big').missesFail + pool(s, 'default').missesFail,
        s.missesFail,
        'per pool, summing to the total',
      );
    } finally {
      await Promise.all(clients.map((c) => c.close()));
    }
  });

  it('miss policy cold with nothing ready anywhere boots one of the requested pool’s shape, outside its size', async () => {
    const s0 = await waitFor('both pools full', full);
    // Drain both pools: a request routes to any ready VM within reach before it misses.
    const held = await Promise.all([
      remote.getBaseVM(undefined, { shape: BIG }),
      remote.getBaseVM(undefined, { shape: BIG }),
      remote.getBaseVM(),
      remote.getBaseVM(),
    ]);
    try {
      const vm = await remote.getBaseVM(undefined, { shape: BIG, missPolicy: 'cold' });
      try {
        assert.deepEqual([vm.record.spec.cpus, vm.record.spec.memoryMiB], [BIG.cpus, BIG.memoryMiB]);
        await vm.resume();
        assert.equal((await guestShape(vm)).cpus, BIG.cpus);
      } finally {
        await vm.destroy();
      }
      const s = await status();
      assert.equal(pool(s, 'big').missesCold, pool(s0, 'big').missesCold + 1, 'a cold miss of the big pool');
      assert.equal(pool(s, 'default').missesCold, pool(s0, 'default').missesCold);
      assert.equal(pool(s, 'big').target, 2, 'the pool keeps its size');
    } finally {
      await Promise.all(held.map((v) => v.destroy()));
    }
  });

  it('a waiting request is served by the first VM to become ready in any pool within reach, not only its own pool’s', async () => {
    const s0 = await waitFor('both pools full', full);
    // Drain both pools, the big one first: its refills take the host's boot slots first, so the first VM to
    // become ready is a big one. A small request waits; it gets that big VM (larger, as is) rather than waiting
    // for its own pool's boot behind them.
    const held = [];
    for (const shape of [BIG, BIG, SMALL, SMALL]) held.push(await remote.getBaseVM(undefined, { shape }));
    try {
      const vm = await remote.getBaseVM(undefined, { shape: SMALL });
      try {
        assert.deepEqual(
          [vm.record.spec.cpus, vm.record.spec.memoryMiB],
          [BIG.cpus, BIG.memoryMiB],
          'the big refill, ready first, served the small request',
        );
        await vm.resume();
        assert.equal((await vm.run(['echo', 'mine'])).stdout.toString(), 'mine\n');
      } finally {
        await vm.destroy();
      }
      const s = await status();
      assert.equal(
        pool(s, 'default').missesWait,
        pool(s0, 'default').missesWait + 1,
        'a wait of its own pool',
      );
      assert.equal(
        pool(s, 'big').hits,
        pool(s0, 'big').hits + 2,
        'the two big takes; serving the wait is no hit',
      );
    } finally {
      await Promise.all(held.map((v) => v.destroy()));
    }
    await waitFor('both pools full again', full);
  });

  it('exports each pool’s series, labelled with its name', async () => {
    const body = await new Promise<string>((resolve, reject) => {
      const req = request({ socketPath: metricsSock, path: '/metrics' }, (res) => {
        let out = '';
        res.on('data', (c) => {
          out += c;
        });
        res.on('end', () => resolve(out));
      });
      req.on('error', reject);
      req.end();
    });
    assert.match(body, /^vmcache_pool_target\{pool="big"\} 2$/m);
    assert.match(body, /^vmcache_pool_target\{pool="default"\} 2$/m);
    assert.match(body, /^vmcache_hits_total\{pool="big"\} [1-9]/m);
    assert.match(body, /^vmcache_misses_total\{pool="big",policy="cold"\} [1-9]/m);
    assert.match(body, /^vmcache_routes_total\{kind="exact"\} [1-9]/m);
  });

  it('kill -9 of the server with both pools idle, restart: every VM adopted into its own pool (same ids, no reboot), 0 leaked', async () => {
    const before = await waitFor('both pools full', full);
    const ids = (name: string, s: GrpcStatus) =>
      s.vmstatus
        .filter((v) => `${v.cpu}x${v.memory}` === `${pool(s, name).cpu}x${pool(s, name).memory}`)
        .map((v) => v.id)
        .sort();
    const old = new Map(before.vmstatus.map((v) => [v.id, readRecord(`${env.runDir}/vm/${v.id}`)]));
    await srv.kill();
    for (const r of old.values()) assert.ok(isAlive(r.qemu), `idle VM ${r.id} outlived the killed server`);
    remote = await srv.start();
    const s = await status();
    assert.equal(s.booting, 0, 'nothing booted: both pools are full with the adopted VMs');
    for (const name of ['default', 'big']) assert.deepEqual(ids(name, s), ids(name, before), `pool ${name}`);
    for (const v of s.vmstatus)
      assert.deepEqual(readRecord(`${env.runDir}/vm/${v.id}`).qemu, old.get(v.id)!.qemu);
    const leaked = listVmDirs(env.runDir).filter(
      (d) => d.record && isAlive(d.record.qemu) && !(d.record.owner && isAlive(d.record.owner)),
    );
    assert.deepEqual(
      leaked.map((d) => d.id),
      [],
      'no orphan',
    );
  });
});
