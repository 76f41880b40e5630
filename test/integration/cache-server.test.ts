import assert from 'node:assert/strict';
import { existsSync, statSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { credentials, Metadata } from '@grpc/grpc-js';
import { connectCache } from '../../src/api.js';
import { isVmcError } from '../../src/errors.js';
import { VmFactory } from '../../src/factory/factory.js';
import { LEASE_METADATA, type RemoteCacheFactory } from '../../src/factory/remote-cache.js';
import { isAlive } from '../../src/platform/process.js';
import {
  CacheServiceClient,
  type GrpcStatus,
  type GrpcVM,
} from '../../src/protocol/cache/generated/cache.js';
import { decodeHandoff } from '../../src/vm/handoff.js';
import { listVmDirs, readRecord } from '../../src/vm/record.js';
import { Vm } from '../../src/vm/vm.js';
import { FactoryInit } from '../helpers/cache-server.js';
import { run, VMCACHE } from '../helpers/cli.js';
import { IMAGE_DIR, vmEnv } from '../helpers/vm-env.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A raw client (what a Kata-generated client is): no lease unless asked, no adoption. */
function rawGetBaseVM(endpoint: string, lease: boolean): Promise<GrpcVM> {
  const c = new CacheServiceClient(`unix://${endpoint}`, credentials.createInsecure());
  const md = new Metadata();
  if (lease) md.set(LEASE_METADATA, '1');
  return new Promise((resolve, reject) =>
    c.getBaseVm({}, md, (e, r) => {
      c.close();
      if (e) reject(e);
      else resolve(r!);
    }),
  );
}

describe('VM cache server (vmcache factory init, real QEMU)', () => {
  const env = vmEnv();
  const endpoint = `${env.runDir}/cache.sock`;
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

  before(async () => {
    writeFileSync(
      cfg,
      `[factory]\nvm_cache_number = 2\nvm_cache_endpoint = "${endpoint}"\n[cache]\nlease_timeout = 2\nhealth_interval = 1\nmetrics_endpoint = "${env.runDir}/metrics.sock"\n`,
    );
    remote = await srv.start();
  });

  after(async () => {
    await srv.cleanup();
    await run(VMCACHE, ['vm', 'gc'], cliEnv);
    env.cleanup();
  });

  it('creates its socket with mode 0600 and fills its two slots', async () => {
    assert.equal(statSync(endpoint).mode & 0o777, 0o600);
    const s = await waitFor('2 ready VMs', (x) => x.vmstatus.length === 2);
    assert.equal(s.target, 2);
    assert.ok(s.vmstatus.every((v) => v.state === 'paused' && v.pid > 0 && v.cpu === 1 && v.memory === 512));
  });

  it('hands a VM to a client in another process (vm run) and refills', async () => {
    const r = await run(
      VMCACHE,
      ['vm', 'run', '--verbose', '--', 'sh', '-c', 'echo hello-from-cache; exit 3'],
      cliEnv,
    );
    assert.equal(r.code, 3, r.stderr);
    assert.equal(r.stdout, 'hello-from-cache\n');
    assert.match(r.stderr, /from the VM cache, ready in \d+ ms/);
    const s = await status();
    assert.ok(s.hits >= 1);
    assert.ok(s.vmstatus.length + s.booting === 2, `refilling: ${JSON.stringify(s)}`);
  });

  it('a Kata-style client without a lease gets an unowned VM that another process can adopt', async () => {
    await waitFor('a ready VM', (x) => x.vmstatus.length >= 1);
    const g = await rawGetBaseVM(endpoint, false);
    assert.equal(g.leaseId, '');
    assert.equal(g.cpu, 1);
    assert.equal(g.memory, 512);
    const rec = decodeHandoff(g.hypervisor);
    assert.equal(readRecord(rec.files.dir).owner, null);
    const got = await new VmFactory(
      {
        config: () => rec.spec,
        getBaseVM: () => Vm.attachRecord(rec, env.deps, { takeOwnership: true }),
        close: async () => {},
      },
      env.deps,
    ).getVM(rec.spec);
    assert.equal((await got.vm.run(['echo', 'adopted'])).stdout.toString(), 'adopted\n');
    await got.vm.destroy();
  });

  it('never gives one VM to two concurrent clients', async () => {
    await waitFor('2 ready VMs', (x) => x.vmstatus.length === 2);
    const vms = await Promise.all([remote.getBaseVM(), remote.getBaseVM(), remote.getBaseVM()]);
    assert.equal(new Set(vms.map((v) => v.id)).size, 3);
    await Promise.all(vms.map((v) => v.destroy()));
  });

  it('miss policies on a drained pool: fail answers at once with its code, cold boots one outside the pool', async () => {
    await waitFor('2 ready VMs', (x) => x.vmstatus.length === 2);
    const held = [await remote.getBaseVM(), await remote.getBaseVM()];
    try {
      const t0 = Date.now();
      await assert.rejects(remote.getBaseVM(undefined, { missPolicy: 'fail' }), (e) =>
        isVmcError(e, 'VMC_ERR_CACHE_MISS'),
      );
      assert.ok(Date.now() - t0 < 2_000, `fail took ${Date.now() - t0} ms`);
      const f = await run(VMCACHE, ['vm', 'run', '--miss-policy', 'fail', '--', 'true'], cliEnv);
      assert.notEqual(f.code, 0);
      assert.match(f.stderr, /VMC_ERR_CACHE_MISS/);
      const c = await run(
        VMCACHE,
        ['vm', 'run', '--verbose', '--miss-policy', 'cold', '--', 'echo', 'cold'],
        cliEnv,
      );
      assert.equal(c.stdout, 'cold\n', c.stderr);
      assert.match(c.stderr, /from the VM cache/);
      const s = await status();
      assert.ok(s.target === 2, 'the cold boot is outside the pool');
    } finally {
      await Promise.all(held.map((v) => v.destroy()));
    }
  });

  it('grows a cached VM through the API: hot-plugged vCPU and memory are online in the guest', async () => {
    await waitFor('a ready VM', (x) => x.vmstatus.length >= 1);
    const cache = await connectCache(endpoint);
    const vm = await cache.getVM({ cpus: 2, memoryMiB: 768 });
    try {
      const r = await vm.run(['sh', '-c', 'cat /sys/devices/system/cpu/online; grep MemTotal /proc/meminfo']);
      const [online, mem] = r.stdout.toString().trim().split('\n');
      assert.equal(online, '0-1');
      assert.ok(Number(/(\d+)/.exec(mem!)![1]) > 600 * 1024, `MemTotal grew: ${mem}`);
      assert.deepEqual(vm.record.hotplug, { cpus: 1, memoryMiB: 256 });
    } finally {
      await vm.destroy();
      await cache.close();
    }
  });

  it('stops the VM of a client that died mid hand-off (lease expired)', async () => {
    await waitFor('a ready VM', (x) => x.vmstatus.length >= 1);
    const g = await rawGetBaseVM(endpoint, true); // takes a lease and never acknowledges: a client that died
    assert.ok(g.leaseId);
    const rec = decodeHandoff(g.hypervisor);
    assert.ok(isAlive(rec.qemu));
    await sleep(2_000 + 1_500);
    assert.equal(isAlive(rec.qemu), false, 'the abandoned VM was stopped');
    assert.equal(existsSync(rec.files.dir), false);
  });

  it('replaces an idle VM whose QEMU was killed, and never hands it out', async () => {
    const s = await waitFor('2 ready VMs', (x) => x.vmstatus.length === 2);
    const victim = s.vmstatus[0]!;
    process.kill(victim.pid, 'SIGKILL');
    const vm = await remote.getBaseVM();
    assert.notEqual(vm.id, victim.id);
    await vm.resume();
    assert.deepEqual(await vm.agent.request({ op: 'ping' }), { pong: true });
    await vm.destroy();
    await waitFor(
      'the pool to refill',
      (x) => x.vmstatus.length === 2 && !x.vmstatus.some((v) => v.id === victim.id),
    );
  });

  it('survives garbage bytes and malformed requests on its socket', async () => {
    await new Promise<void>((resolve) => {
      const s = connect(endpoint, () =>
        s.write(Buffer.from('GET / HTTP/1.1\r\n\r\n\x00\xff garbage garbage')),
      );
      // The server may close the connection or just ignore it; either way we stop after a second.
      const t = setTimeout(() => s.destroy(), 1_000);
      s.on('close', () => {
        clearTimeout(t);
        resolve();
      });
      s.on('error', () => {});
    });
    const c = new CacheServiceClient(`unix://${endpoint}`, credentials.createInsecure());
    const ack = await new Promise<{ code?: number; details?: string }>((resolve) =>
      c.ackVm({ id: '', leaseId: '' }, new Metadata(), { deadline: Date.now() + 5_000 }, (e) =>
        resolve(e ?? {}),
      ),
    );
    assert.equal(ack.code, 3, 'AckVM without fields: INVALID_ARGUMENT');
    const ack2 = await new Promise<{ code?: number; details?: string }>((resolve) =>
      c.ackVm({ id: 'nope', leaseId: 'nope' }, new Metadata(), { deadline: Date.now() + 5_000 }, (e) =>
        resolve(e ?? {}),
      ),
    );
    assert.equal(ack2.code, 9, 'unknown lease: FAILED_PRECONDITION');
    c.close();
    assert.ok((await status()).pid > 0, 'still serving');
  });

  it('exports Prometheus metrics', async () => {
    const body = await new Promise<string>((resolve, reject) => {
      const s = connect(`${env.runDir}/metrics.sock`, () => s.write('GET /metrics HTTP/1.0\r\n\r\n'));
      let out = '';
      s.on('data', (c) => {
        out += c;
      });
      s.on('end', () => resolve(out));
      s.on('error', reject);
    });
    assert.match(body, /^vmcache_hits_total\{pool="default"\} [1-9]/m);
    assert.match(body, /^vmcache_pool_ready\{pool="default"\} \d/m);
    assert.match(body, /vmcache_handoffs_total\{outcome="reclaimed"\} 1/);
    assert.match(body, /vmcache_boot_seconds_count\{pool="default"\} [1-9]/);
  });

  it('refuses a second server on a live socket', async () => {
    const r = await run(VMCACHE, ['factory', 'init'], cliEnv);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /already serving.*VMC_ERR_CACHE_ENDPOINT_IN_USE/);
  });

  it('kill -9 of the server with idle VMs, restart: they are adopted (same VM ids, same QEMU, no reboot), 0 leaked', async () => {
    const before = await waitFor('2 ready VMs', (x) => x.vmstatus.length === 2 && x.booting === 0);
    const ids = before.vmstatus.map((v) => v.id).sort();
    const old = new Map(ids.map((id) => [id, readRecord(`${env.runDir}/vm/${id}`)]));
    await srv.kill();
    for (const r of old.values()) assert.ok(isAlive(r.qemu), `idle VM ${r.id} outlived the killed server`);
    remote = await srv.start(); // adopts before it binds the socket: once it answers, adoption is done
    const s = await status();
    assert.deepEqual(s.vmstatus.map((v) => v.id).sort(), ids, 'the same VMs are ready in the new server');
    assert.equal(s.booting, 0, 'nothing booted: the pool is full with the adopted VMs');
    for (const v of s.vmstatus) {
      const was = old.get(v.id)!;
      const now = readRecord(`${env.runDir}/vm/${v.id}`);
      assert.equal(v.state, 'paused');
      assert.equal(v.pid, was.qemu.pid);
      // QEMU runs with -no-reboot: a guest reboot would have ended this very process (pid and start time).
      assert.deepEqual(now.qemu, was.qemu, 'the same QEMU process');
      assert.equal(now.createdAt, was.createdAt, 'the same VM, its age going on');
      assert.equal(now.owner?.pid, srv.process.pid, 'owned by the new server');
    }
    // An adopted VM serves a client as any other (its resume is the hand-out's agent check too).
    const vm = await remote.getBaseVM();
    assert.ok(ids.includes(vm.id), `handed out an adopted VM (${vm.id})`);
    await vm.resume();
    const info = (await vm.agent.request({ op: 'info' })) as { uptimeSec: number; bootId: string };
    assert.ok(info.uptimeSec > 0 && info.bootId.length > 0, JSON.stringify(info));
    assert.equal((await vm.run(['echo', 'adopted'])).stdout.toString(), 'adopted\n');
    await vm.destroy();
    await waitFor('the pool to refill', (x) => x.vmstatus.length === 2 && x.booting === 0);
    // 0 leaked: no live QEMU under the run directory lacks a live owner.
    const leaked = listVmDirs(env.runDir).filter(
      (d) => d.record && isAlive(d.record.qemu) && !(d.record.owner && isAlive(d.record.owner)),
    );
    assert.deepEqual(
      leaked.map((d) => d.id),
      [],
      'no orphan',
    );
  });

  it('kill -9 of the server leaves no orphan once it restarts; destroy stops idle VMs and spares handed-out ones', async () => {
    const s = await waitFor('2 ready VMs', (x) => x.vmstatus.length === 2);
    const held = await remote.getBaseVM(); // a VM a client owns
    await srv.kill();
    const orphans = s.vmstatus
      .filter((v) => v.id !== held.id)
      .map((v) => readRecord(`${env.runDir}/vm/${v.id}`).qemu);
    assert.ok(
      orphans.some((o) => isAlive(o)),
      'idle VMs outlived the killed server',
    );
    // Restarted with another shape, so that the idle VMs fail adoption's check and are reaped (adoption of the
    // same shape: the test before). The last test: the configuration is not restored.
    writeFileSync(
      cfg,
      `[factory]\nvm_cache_number = 2\nvm_cache_endpoint = "${endpoint}"\n[cache]\nlease_timeout = 2\nhealth_interval = 1\nmetrics_endpoint = "${env.runDir}/metrics.sock"\n[hypervisor.qemu]\ndefault_memory = 640\n`,
    );
    remote = await srv.start(); // replaces the stale socket, reaps the orphans
    for (const o of orphans) assert.equal(isAlive(o), false, `orphan pid ${o.pid} reaped`);
    await waitFor('1 ready VM', (x) => x.vmstatus.length >= 1);
    const idle = (await status()).vmstatus.map((v) => readRecord(`${env.runDir}/vm/${v.id}`).qemu);
    const d = await run(VMCACHE, ['factory', 'destroy'], cliEnv);
    assert.equal(d.code, 0, d.stderr);
    assert.equal((await srv.done).code, 0);
    assert.equal(existsSync(endpoint), false, 'socket removed');
    for (const q of idle) assert.equal(isAlive(q), false, 'idle VMs stopped');
    assert.ok(held.alive(), 'the handed-out VM is untouched');
    await held.destroy();
  });
});
