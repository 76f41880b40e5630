import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { copyFileSync, existsSync, mkdtempSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { IMAGE_FILES } from '../../src/guest/image/manifest.js';
import { isAlive } from '../../src/platform/process.js';
import { listVmDirs } from '../../src/vm/record.js';
import { finished, run, VMCACHE } from '../helpers/cli.js';
import { IMAGE_DIR, vmDirsLeft, vmEnv } from '../helpers/vm-env.js';

describe('vmcache vm run', () => {
  const env = vmEnv();
  const cliEnv = { ...process.env, VMCACHE_RUN_DIR: env.runDir, VMCACHE_IMAGE_DIR: IMAGE_DIR };
  after(() => env.cleanup());

  it('runs the command in a fresh guest, passes stdio and the exit status, and leaves nothing', async () => {
    // The configuration enables a cache whose server is not running: vm run must warn and boot directly.
    const cfg = join(env.runDir, 'no-server.toml');
    writeFileSync(cfg, `[factory]\nvm_cache_number = 1\nvm_cache_endpoint = "${env.runDir}/nobody.sock"\n`);
    const r = await run(
      VMCACHE,
      ['vm', 'run', '--timings', '--', 'sh', '-c', 'uname -a; read x; echo "got $x"; echo oops >&2; exit 5'],
      { ...cliEnv, VMCACHE_CONFIG: cfg },
      'hello\n',
    );
    assert.match(r.stderr, /VM cache server unreachable; booting a VM directly/);
    assert.equal(r.code, 5, r.stderr);
    assert.match(r.stdout, /^Linux vmcache \S+ .*x86_64/);
    assert.match(r.stdout, /got hello/);
    assert.match(r.stderr, /oops/);
    assert.match(r.stderr, /timings: vm ready \d+ ms/);
    assert.deepEqual(vmDirsLeft(env.runDir), []);
  });

  it('destroys the VM on SIGINT while the command runs, and exits 130', async () => {
    const child = spawn(VMCACHE, ['vm', 'run', '--', 'sh', '-c', 'echo started; sleep 600'], {
      env: cliEnv,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const done = finished(child);
    await new Promise<void>((resolve) =>
      child.stdout.on('data', (c: Buffer) => c.includes('started') && resolve()),
    );
    const [rec] = listVmDirs(env.runDir);
    child.kill('SIGINT');
    const r = await done;
    assert.equal(r.code, 130, r.stderr);
    assert.equal(isAlive(rec!.record!.qemu), false);
    assert.deepEqual(vmDirsLeft(env.runDir), []);
  });

  it('stops a half-booted VM on SIGINT during the boot', async () => {
    const child = spawn(VMCACHE, ['vm', 'run', '--', 'true'], {
      env: cliEnv,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const done = finished(child);
    // Wait until QEMU is recorded, then interrupt long before the guest is ready.
    while (listVmDirs(env.runDir).every((d) => !d.record)) await new Promise((r) => setTimeout(r, 20));
    const [rec] = listVmDirs(env.runDir);
    child.kill('SIGINT');
    const r = await done;
    assert.equal(r.code, 130, r.stderr);
    assert.equal(isAlive(rec!.record!.qemu), false);
    assert.deepEqual(vmDirsLeft(env.runDir), []);
  });

  it('names the problem when QEMU cannot start (a kernel file that is not a kernel)', async () => {
    const img = mkdtempSync('/tmp/vmc-img-');
    try {
      writeFileSync(join(img, IMAGE_FILES.kernel), 'this is not a kernel');
      for (const f of [IMAGE_FILES.initrd, IMAGE_FILES.rootfs]) symlinkSync(join(IMAGE_DIR, f), join(img, f));
      copyFileSync(join(IMAGE_DIR, IMAGE_FILES.manifest), join(img, IMAGE_FILES.manifest));
      const r = await run(VMCACHE, ['vm', 'run', '--', 'true'], { ...cliEnv, VMCACHE_IMAGE_DIR: img });
      assert.equal(r.code, 125);
      assert.match(r.stderr, /QEMU exited before the VM was ready.*\n.*(too old|not a|kernel)/);
      assert.match(r.stderr, /VMC_ERR_QEMU_EXITED/);
      assert.deepEqual(vmDirsLeft(env.runDir), []);
    } finally {
      rmSync(img, { recursive: true, force: true });
    }
  });

  it('image build is a no-op when the image is up to date', async () => {
    const before = statSync(join(IMAGE_DIR, IMAGE_FILES.rootfs)).mtimeMs;
    const r = await run(VMCACHE, ['image', 'build'], cliEnv);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /kernel .*: up to date/);
    assert.match(r.stderr, /root disk: up to date/);
    assert.equal(statSync(join(IMAGE_DIR, IMAGE_FILES.rootfs)).mtimeMs, before);
  });

  it('says how to build the image when there is none', async () => {
    const r = await run(VMCACHE, ['vm', 'run', '--', 'true'], {
      ...cliEnv,
      VMCACHE_IMAGE_DIR: '/nonexistent/image',
    });
    assert.equal(r.code, 125);
    assert.match(r.stderr, /run 'vmcache image build'.*VMC_ERR_IMAGE_MISSING/);
  });

  it('rejects a bad option value naming the option', async () => {
    const r = await run(VMCACHE, ['vm', 'run', '--cpus', 'zero', '--', 'true'], cliEnv);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /--cpus must be a positive integer/);
    assert.ok(!existsSync(join(env.runDir, 'vm')) || vmDirsLeft(env.runDir).length === 0);
  });
});
