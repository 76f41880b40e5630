import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { FactoryBase } from '../../src/factory/base.js';
import { VmFactory } from '../../src/factory/factory.js';
import { readManifest } from '../../src/guest/image/manifest.js';
import { translationStats } from '../../src/hypervisor/qemu/translations.js';
import { isAlive } from '../../src/platform/process.js';
import { Vm } from '../../src/vm/vm.js';
import { IMAGE_DIR, noProcessMentions, vmDirsLeft, vmEnv } from '../helpers/vm-env.js';

/** One VM booted once and shared by every test that does not need a fresh machine (a cold boot costs seconds). */
describe('a real QEMU guest', () => {
  const env = vmEnv();
  let vm: Vm;

  before(async () => {
    vm = await Vm.boot(env.spec, env.deps);
  });

  after(async () => {
    const dir = vm?.record.files.dir;
    await vm?.destroy();
    env.cleanup();
    if (vm) assert.equal(isAlive(vm.record.qemu), false, 'QEMU still running after destroy');
    if (dir) assert.equal(existsSync(dir), false, 'state directory left behind');
  });

  it('runs the guest kernel from the image (uname -r)', async () => {
    const r = await vm.run(['uname', '-r']);
    assert.equal(r.code, 0);
    assert.equal(r.stdout.toString().trim(), readManifest(IMAGE_DIR)!.kernel.version);
  });

  it('passes exit statuses through', async () => {
    for (const code of [0, 1, 42]) {
      assert.equal((await vm.run(['sh', '-c', `exit ${code}`])).code, code);
    }
  });

  it('pipes stdin to the guest process', async () => {
    const input = `${randomBytes(40000).toString('hex')}\n`;
    const r = await vm.run(['sh', '-c', 'wc -c; md5sum'], { input });
    const [count] = r.stdout.toString().trim().split('\n');
    assert.equal(Number(count), input.length);
  });

  it('keeps stdout and stderr separate', async () => {
    const r = await vm.run(['sh', '-c', 'echo to-out; echo to-err >&2; echo more-out']);
    assert.equal(r.stdout.toString(), 'to-out\nmore-out\n');
    assert.equal(r.stderr.toString(), 'to-err\n');
  });

  it('applies env, cwd and uid', async () => {
    const r = await vm.run(['sh', '-c', 'echo "$FOO|$(pwd)|$(id -u)"'], {
      env: ['FOO=a=b', 'PATH=/bin:/usr/bin'],
      cwd: '/tmp',
      uid: 65534,
      gid: 65534,
    });
    assert.equal(r.stdout.toString().trim(), 'a=b|/tmp|65534');
  });

  it('delivers a signal to the guest process', async () => {
    const p = await vm.exec({
      args: ['sh', '-c', 'trap "echo got-term; exit 9" TERM; echo ready; while true; do sleep 0.1; done'],
    });
    const out: Buffer[] = [];
    await new Promise<void>((resolve) =>
      p.stdout.on('data', (c: Buffer) => {
        out.push(c);
        if (Buffer.concat(out).includes('ready')) resolve();
      }),
    );
    await p.kill('SIGTERM');
    const s = await p.wait();
    assert.equal(s.code, 9);
    assert.match(Buffer.concat(out).toString(), /got-term/);
  });

  it('runs two processes at once', async () => {
    const t0 = Date.now();
    const [a, b] = await Promise.all([
      vm.run(['sh', '-c', 'sleep 1; echo a']),
      vm.run(['sh', '-c', 'sleep 1; echo b']),
    ]);
    assert.equal(a.stdout.toString(), 'a\n');
    assert.equal(b.stdout.toString(), 'b\n');
    assert.ok(Date.now() - t0 < 1900, 'the two sleeps ran concurrently');
  });

  it('sets the guest clock', async () => {
    const target = 1_900_000_000n; // 2030
    await vm.agent.request({ op: 'set-time', epochNs: (target * 1_000_000_000n).toString() });
    const r = await vm.run(['date', '+%s']);
    assert.ok(Math.abs(Number(r.stdout.toString()) - Number(target)) < 5);
    await vm.agent.request({ op: 'set-time', epochNs: (BigInt(Date.now()) * 1_000_000n).toString() });
    const now = Number((await vm.run(['date', '+%s'])).stdout.toString());
    assert.ok(Math.abs(now - Date.now() / 1000) < 5);
  });

  it('reseeds the guest RNG through the helper', async () => {
    await vm.agent.request({ op: 'reseed', data: randomBytes(64).toString('hex') });
    await assert.rejects(vm.agent.request({ op: 'reseed', data: 'xyz' }), /reseed.data/);
  });

  it("mounts the VM's shared directory on request and sees host files", async () => {
    writeFileSync(join(vm.record.files.sharedDir, 'from-host.txt'), 'shared!');
    const { path } = await vm.agent.request<{ path: string }>({ op: 'mount-shared' });
    const r = await vm.run(['cat', join(path, 'from-host.txt')]);
    assert.equal(r.stdout.toString(), 'shared!');
    const again = await vm.agent.request<{ path: string }>({ op: 'mount-shared' });
    assert.equal(again.path, path);
  });

  it('pauses and resumes the vCPUs', async () => {
    await vm.pause();
    assert.equal(await vm.status(), 'paused');
    await vm.resume();
    assert.equal(await vm.status(), 'running');
    assert.deepEqual(await vm.agent.request({ op: 'ping' }), { pong: true });
  });

  it('makes QEMU flush its TCG translation buffer by churning fresh code in the guest, and keeps running', async () => {
    const before = await translationStats(vm.qmp);
    const passes = await vm.flushTranslations();
    const now = await translationStats(vm.qmp);
    assert.ok(passes >= 1 && passes <= 120, `${passes} churn passes for a 64 MiB buffer`);
    assert.equal(now.flushes, before.flushes + 1, 'one flush, and only one');
    // What runs after the flush (the churn's last pass, the agent's reply path) is translated anew: ~7-13 MiB.
    assert.ok(
      now.usedBytes < now.sizeBytes / 2,
      `most of the buffer free after the flush: ${now.usedBytes} of ${now.sizeBytes} bytes used`,
    );
    assert.equal((await vm.run(['/bin/echo', 'on'])).stdout.toString(), 'on\n');
    await assert.rejects(vm.agent.request({ op: 'churn', passes: 201 }), /churn.passes/);
  });

  it('reports a program missing in the guest clearly', async () => {
    await assert.rejects(vm.run(['/no/such/program']), /cannot run \/no\/such\/program/);
  });

  it("reports the guest's own times, and getVM's phases add up to its total (parked, re-attached, composed)", async () => {
    // The guest's times on a running VM: a plain exec reports its fork + exec within rx..tx.
    const p = await vm.exec({ args: ['/bin/true'] });
    const g = p.startTrace?.guest;
    assert.ok(g, 'the exec reply carries no guest times');
    assert.ok(g.rx <= g.tx && g.spawn !== undefined && g.spawn <= g.tx - g.rx, JSON.stringify(g));
    assert.ok(p.startTrace!.sentMs <= p.startTrace!.receivedMs);
    await p.wait();
    // The hand-off path with one VM: park it, let go of it, and hand it to the composer through a base that
    // re-attaches it as a cache client does (QMP, query-status, owner), so it resumes, greets, reseeds, sets time.
    await vm.park();
    vm.detach();
    const record = vm.record;
    const base: FactoryBase = {
      config: () => env.spec,
      getBaseVM: (_signal, opts) =>
        Vm.attachRecord(record, env.deps, { takeOwnership: true, trace: opts?.trace }),
      close: async () => {},
    };
    const got = await new VmFactory(base, env.deps).getVM(env.spec);
    vm = got.vm;
    const { phases, figures, totalMs } = got.phases;
    assert.deepEqual(
      phases.map((x) => x.name),
      [
        'attach: QMP connect',
        'attach: query-status',
        'attach: owner',
        'getBaseVM: rest',
        'resume: QMP cont',
        'resume: agent connect + handshake',
        'reseed + set-time',
        'grow',
      ],
    );
    assert.ok(
      phases.every((x) => x.ms >= 0),
      JSON.stringify(phases),
    );
    // The laps and the composer's own total are read on the same clock, around the same code.
    assert.ok(Math.abs(totalMs - got.timings.totalMs) <= 1, `${totalMs} vs ${got.timings.totalMs}`);
    const hello = got.vm.agent.session!.trace.guest;
    assert.ok(hello && hello.conn <= hello.rx && hello.rx <= hello.tx, JSON.stringify(hello));
    const guestNames = figures.filter((f) => f.clock === 'guest').map((f) => f.name);
    for (const name of [
      'hello: connection seen → hello read',
      'hello: read → answered',
      'reseed: handling (read → answered)',
      'set-time: handling (read → answered)',
    ])
      assert.ok(guestNames.includes(name), `no guest figure "${name}" in ${JSON.stringify(figures)}`);
    assert.ok(
      figures.every((f) => f.ms >= 0 || f.name.includes('outside the guest')),
      JSON.stringify(figures),
    );
    assert.deepEqual(await vm.agent.request({ op: 'ping' }), { pong: true });
  });

  it('leaves no process or socket behind when destroyed (separate VM)', async () => {
    const other = await Vm.boot(env.spec, env.deps);
    const { dir, qmpSocket } = other.record.files;
    await other.destroy();
    assert.equal(isAlive(other.record.qemu), false);
    assert.equal(existsSync(qmpSocket), false);
    assert.equal(existsSync(dir), false);
    assert.ok(noProcessMentions(dir));
    assert.deepEqual(vmDirsLeft(env.runDir), [vm.id]);
  });
});
