import assert from 'node:assert/strict';
import { existsSync, truncateSync, writeFileSync } from 'node:fs';
import { after, describe, it } from 'node:test';
import { VmFactory } from '../../src/factory/factory.js';
import { TemplateFactory, templateFiles } from '../../src/factory/template.js';
import { spareTapName } from '../../src/hypervisor/qemu/tap-names.js';
import { mountsUnder } from '../../src/platform/mounts.js';
import { run, VMCACHE } from '../helpers/cli.js';
import { IMAGE_DIR, noProcessMentions, vmDirsLeft, vmEnv } from '../helpers/vm-env.js';

/** VM templating with real QEMU: one template made by `factory init`, shared by every test below. */
describe('VM templating', () => {
  const env = vmEnv();
  const tpl = `${env.runDir}/template`;
  const cfg = `${env.runDir}/template.toml`;
  const cliEnv = {
    ...process.env,
    VMCACHE_RUN_DIR: env.runDir,
    VMCACHE_IMAGE_DIR: IMAGE_DIR,
    VMCACHE_CONFIG: cfg,
  };
  writeFileSync(cfg, `[factory]\nenable_template = true\ntemplate_path = "${tpl}"\n`);
  /** `factory status --json` on `e`, polled (at most `tries` times, 100 ms apart) until `n` VMs are idle. */
  const idleVms = async (e: NodeJS.ProcessEnv, n: number, tries: number) => {
    let r = await run(VMCACHE, ['factory', 'status', '--json'], e);
    for (let i = 0; i < tries && !(r.code === 0 && JSON.parse(r.stdout).vmstatus.length === n); i++) {
      await new Promise((res) => setTimeout(res, 100));
      r = await run(VMCACHE, ['factory', 'status', '--json'], e);
    }
    return r;
  };
  after(async () => {
    await run(VMCACHE, ['factory', 'destroy'], cliEnv);
    env.cleanup();
  });

  it('factory init creates the template on a tmpfs and exits; a second init reuses it', async () => {
    const r = await run(VMCACHE, ['factory', 'init'], cliEnv);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /created the VM template/);
    assert.deepEqual(mountsUnder(tpl), [tpl]);
    const again = await run(VMCACHE, ['factory', 'init'], cliEnv);
    assert.match(again.stderr, /using the existing VM template/);
    const s = await run(VMCACHE, ['factory', 'status'], cliEnv);
    assert.match(s.stdout, /template .*: \d+ MiB, made /);
    assert.deepEqual(vmDirsLeft(env.runDir), [], 'the template VM itself is gone');
  });

  it('clones are distinct machines: different RNG output and boot ids, their own agent session', async () => {
    const { factory } = await TemplateFactory.open(env.spec, tpl, env.deps, { create: 'no' });
    const f = new VmFactory(factory, env.deps);
    const [a, b] = [await f.getVM(env.spec), await f.getVM(env.spec)];
    try {
      const probe = [
        'sh',
        '-c',
        'head -c 16 /dev/urandom | od -An -tx1; cat /proc/sys/kernel/random/boot_id',
      ];
      const [ra, rb] = [await a.vm.run(probe), await b.vm.run(probe)];
      assert.notEqual(ra.stdout.toString(), rb.stdout.toString());
      const [bootA, bootB] = [ra, rb].map((r) => r.stdout.toString().trim().split('\n').pop());
      assert.notEqual(bootA, bootB);
      assert.notEqual(a.vm.record.qemu.pid, b.vm.record.qemu.pid);
      assert.equal((await a.vm.run(['echo', 'clone-a'])).stdout.toString(), 'clone-a\n');
      // Each clone's spare NIC has a tap of its own, opened by its own QEMU.
      for (const c of [a, b])
        assert.ok(existsSync(`/sys/class/net/${spareTapName(c.vm.id)}`), `spare tap of clone ${c.vm.id}`);
      assert.deepEqual(a.phases.phases.map((p) => p.name).slice(0, 3), [
        'boot: spawn QEMU',
        'boot: QMP socket + connect',
        "clone: load the template's state",
      ]);
    } finally {
      await a.vm.destroy();
      await b.vm.destroy();
    }
  });

  it("sets a clone's clock although the template was saved earlier", async () => {
    // The template was saved during the first test; wait so that an unfixed clock would be visibly behind.
    await new Promise((r) => setTimeout(r, 4_000));
    const { factory } = await TemplateFactory.open(env.spec, tpl, env.deps, { create: 'no' });
    const got = await new VmFactory(factory, env.deps).getVM(env.spec);
    try {
      const guest = Number((await got.vm.run(['date', '+%s'])).stdout.toString());
      assert.ok(Math.abs(guest - Date.now() / 1000) < 2, `guest clock ${guest} vs host ${Date.now() / 1000}`);
    } finally {
      await got.vm.destroy();
    }
  });

  it('vm run uses a clone', async () => {
    const r = await run(VMCACHE, ['vm', 'run', '--verbose', '--', 'echo', 'from-clone'], cliEnv);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, 'from-clone\n');
    assert.match(r.stderr, /cloned from the VM template, ready in \d+ ms/);
  });

  it('template + cache: the cache server fills its pool with clones and serves vm run', async () => {
    const both = `${env.runDir}/both.toml`;
    writeFileSync(
      both,
      `[factory]\nenable_template = true\ntemplate_path = "${tpl}"\nvm_cache_number = 1\nvm_cache_endpoint = "${env.runDir}/cache.sock"\n`,
    );
    const e = { ...cliEnv, VMCACHE_CONFIG: both };
    const { spawn } = await import('node:child_process');
    const server = spawn(VMCACHE, ['factory', 'init'], { env: e, stdio: 'ignore' });
    try {
      const r = await idleVms(e, 1, 200);
      assert.equal(JSON.parse(r.stdout).vmstatus.length, 1, r.stderr);
      const v = await run(VMCACHE, ['vm', 'run', '--verbose', '--', 'echo', 'cached-clone'], e);
      assert.equal(v.stdout, 'cached-clone\n', v.stderr);
      assert.match(v.stderr, /from the VM cache/);
    } finally {
      // Stop only the server here: the template stays for the next test.
      server.kill('SIGTERM');
      await new Promise((res) => server.on('exit', res));
    }
  });

  it('a [[cache.pool]] of template clones has its own template beside template_path, which factory destroy removes', async () => {
    // The default pool boots directly; the pool of 2 vCPU/768 MiB clones a template of its own shape.
    const tpl3 = `${env.runDir}/template-pools`;
    const pools = `${env.runDir}/pools.toml`;
    writeFileSync(
      pools,
      `[factory]\ntemplate_path = "${tpl3}"\nvm_cache_number = 1\nvm_cache_endpoint = "${env.runDir}/pools.sock"\n\n[[cache.pool]]\nname = "big"\nvcpus = 2\nmemory = 768\nmin = 1\nmax = 1\ntemplate = true\n`,
    );
    const e = { ...cliEnv, VMCACHE_CONFIG: pools };
    const { spawn } = await import('node:child_process');
    const server = spawn(VMCACHE, ['factory', 'init'], { env: e, stdio: 'ignore' });
    try {
      const r = await idleVms(e, 2, 600);
      const st = JSON.parse(r.stdout);
      assert.equal(st.vmstatus.length, 2, r.stderr);
      assert.deepEqual(
        st.pools.map((p: { name: string; base: string }) => [p.name, p.base]),
        [
          ['default', 'direct'],
          ['big', 'template'],
        ],
      );
      assert.deepEqual(mountsUnder(`${tpl3}-big`), [`${tpl3}-big`], "the big pool's template, on its tmpfs");
      assert.equal(existsSync(tpl3), false, 'the default pool boots directly: no template of its own');
      const v = await run(
        VMCACHE,
        ['vm', 'run', '--verbose', '--cpus', '2', '--memory', '768', '--', 'nproc'],
        e,
      );
      assert.equal(v.stdout, '2\n', v.stderr);
      assert.match(v.stderr, /from the VM cache/);
    } finally {
      const d = await run(VMCACHE, ['factory', 'destroy'], e);
      assert.equal(d.code, 0, d.stderr);
      await new Promise((res) => (server.exitCode !== null ? res(null) : server.on('exit', res)));
    }
    assert.deepEqual(mountsUnder(`${tpl3}-big`), [], "factory destroy unmounted the pool's template");
    assert.equal(existsSync(`${tpl3}-big`), false);
  });

  it('boots directly, warning which fields differ, when the requested config does not match the template', async () => {
    const other = `${env.runDir}/other.toml`;
    writeFileSync(
      other,
      `[factory]\nenable_template = true\ntemplate_path = "${tpl}"\n[hypervisor.qemu]\nkernel_params = "vmcache.test=1"\n`,
    );
    const r = await run(VMCACHE, ['vm', 'run', '--verbose', '--', 'cat', '/proc/cmdline'], {
      ...cliEnv,
      VMCACHE_CONFIG: other,
    });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /vmcache\.test=1/);
    assert.match(r.stderr, /differs from the factory base .*kernelParams/);
    assert.match(r.stderr, /cold boot \(config differs from the factory base in kernelParams\)/);
  });

  it('reports a damaged template clearly and refuses to clone from it', async () => {
    const f = templateFiles(tpl);
    truncateSync(f.state, 100);
    const r = await run(VMCACHE, ['vm', 'run', '--', 'true'], cliEnv);
    assert.equal(r.code, 125);
    assert.match(
      r.stderr,
      /template .* is damaged \(state file is 100 bytes, expected \d+\).*factory destroy.*VMC_ERR_TEMPLATE_DAMAGED/,
    );
  });

  it('the first clients create the template when there is none: two at once make one, both get clones', async () => {
    const tpl2 = `${env.runDir}/template2`;
    const cfg2 = `${env.runDir}/first-use.toml`;
    writeFileSync(cfg2, `[factory]\nenable_template = true\ntemplate_path = "${tpl2}"\n`);
    const e = { ...cliEnv, VMCACHE_CONFIG: cfg2 };
    try {
      const [a, b] = await Promise.all(
        ['one', 'two'].map((w) => run(VMCACHE, ['vm', 'run', '--verbose', '--', 'echo', w], e)),
      );
      assert.equal(a!.stdout, 'one\n', a!.stderr);
      assert.equal(b!.stdout, 'two\n', b!.stderr);
      for (const r of [a!, b!]) assert.match(r.stderr, /cloned from the VM template/);
      const made = [a!, b!].filter((r) => /created the VM template \(first use\)/.test(r.stderr));
      assert.equal(made.length, 1, 'one template for both');
      assert.deepEqual(mountsUnder(tpl2), [tpl2]);
      assert.equal(existsSync(`${tpl2}.lock`), false, 'the creation lock is released');
    } finally {
      const d = await run(VMCACHE, ['factory', 'destroy'], e);
      assert.equal(d.code, 0, d.stderr);
    }
    assert.deepEqual(mountsUnder(tpl2), []);
  });

  it('factory destroy unmounts and removes the template and leaves no process', async () => {
    const d = await run(VMCACHE, ['factory', 'destroy'], cliEnv);
    assert.equal(d.code, 0, d.stderr);
    assert.deepEqual(mountsUnder(tpl), []);
    assert.equal(existsSync(tpl), false);
    assert.deepEqual(vmDirsLeft(env.runDir), []);
    const s = await run(VMCACHE, ['factory', 'status'], cliEnv);
    assert.match(s.stdout, /none \(create it/);
    assert.ok(noProcessMentions(env.runDir), 'no QEMU of the template or its clones is left');
  });
});
