import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { busyboxBundle, busyboxRootfs } from '../helpers/bundle.js';
import { finished, REPO, run, VMCACHE } from '../helpers/cli.js';
import { runtimeCli } from '../helpers/runtime-cli.js';
import { IMAGE_DIR, vmDirsLeft, vmEnv } from '../helpers/vm-env.js';

/** Kata's stock configuration-qemu.toml (see its header): only `[factory] vm_cache_number` differs. */
const KATA_FILE = join(REPO, 'test/fixtures/kata/configuration-qemu.toml');
/** The endpoint that file names (Kata's default). */
const KATA_ENDPOINT = '/var/run/kata-containers/cache.sock';

describe("Kata's own configuration-qemu.toml, unchanged but for [factory]", () => {
  const env = vmEnv();
  const cliEnv = {
    ...process.env,
    VMCACHE_RUN_DIR: env.runDir,
    VMCACHE_IMAGE_DIR: IMAGE_DIR,
    VMCACHE_CONFIG: KATA_FILE,
  };
  after(() => env.cleanup());

  it('starts the cache (factory init), serves vm run and the runtime, and factory destroy leaves nothing', async () => {
    assert.equal(existsSync(KATA_ENDPOINT), false, `${KATA_ENDPOINT} exists: another cache server runs here`);
    const server = spawn(VMCACHE, ['factory', 'init'], { env: cliEnv, stdio: ['ignore', 'pipe', 'pipe'] });
    const serverDone = finished(server);
    try {
      // The file's 2 VMs of 2 GiB boot under TCG; each status call has its own deadline.
      const deadline = Date.now() + 240_000;
      let status = await run(VMCACHE, ['factory', 'status', '--json'], cliEnv, undefined, 30_000);
      while (
        !(status.code === 0 && JSON.parse(status.stdout).vmstatus.length === 2) &&
        Date.now() < deadline
      ) {
        await new Promise((r) => setTimeout(r, 500));
        status = await run(VMCACHE, ['factory', 'status', '--json'], cliEnv, undefined, 30_000);
      }
      assert.equal(status.code, 0, status.stderr);
      assert.equal(JSON.parse(status.stdout).vmstatus.length, 2, status.stdout);

      // Kata's values: 1 vCPU, 2048 MiB, the host's cores as the hot-plug limit; Kata's assets are not ours.
      const v = await run(
        VMCACHE,
        ['vm', 'run', '--verbose', '--', 'sh', '-c', 'nproc; grep MemTotal /proc/meminfo'],
        cliEnv,
      );
      assert.equal(v.code, 0, v.stderr);
      assert.match(v.stderr, /from the VM cache/);
      const [nproc, mem] = v.stdout.trim().split('\n');
      assert.equal(nproc, '1');
      const memMiB = Number(/(\d+) kB/.exec(mem!)![1]) / 1024;
      assert.ok(memMiB > 1800 && memMiB <= 2048, `MemTotal ${memMiB} MiB`);
      assert.match(v.stderr, /names not acted on by vmcache, ignored; covered by the VM boundary: /);
      assert.match(
        v.stderr,
        /kernel \/opt\/kata\/share\/kata-containers\/vmlinux.container \(missing\).*not a vmcache guest image/,
      );
      assert.equal((v.stderr.match(/not a vmcache guest image/g) ?? []).length, 1, 'said once');

      // The runtime (runc CLI) on the same file: a container from the cache.
      const rootfs = busyboxRootfs(env.runDir);
      const bundle = busyboxBundle(join(env.runDir, 'b'), rootfs, {
        args: ['sh', '-c', 'echo from-kata-config'],
      });
      const { vmc } = runtimeCli(join(env.runDir, 'root'), cliEnv);
      const r = await vmc(['run', '--bundle', bundle, 'kata1']);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout, 'from-kata-config\n');

      const d = await run(VMCACHE, ['factory', 'destroy'], cliEnv);
      assert.equal(d.code, 0, d.stderr);
      assert.equal((await serverDone).code, 0);
      assert.equal(existsSync(KATA_ENDPOINT), false, 'socket removed');
      assert.deepEqual(vmDirsLeft(env.runDir), []);
    } finally {
      if (server.exitCode === null) {
        server.kill('SIGTERM');
        await serverDone;
      }
    }
  });

  it('doctor checks the configured paths and keeps printing its rows when the file has an error', async () => {
    const ok = await run(VMCACHE, ['doctor'], cliEnv);
    assert.match(ok.stdout, new RegExp(`warn  configuration: ${KATA_FILE}: 3 warnings`));
    assert.match(ok.stdout, /ok {4}configured guest: the built image/);
    const broken = join(env.runDir, 'broken.toml');
    writeFileSync(broken, '[factory]\nvm_cache_numbr = 2\n');
    const bad = await run(VMCACHE, ['doctor'], { ...cliEnv, VMCACHE_CONFIG: broken });
    assert.equal(bad.code, 1);
    assert.match(
      bad.stdout,
      /fail {2}configuration: .*broken.toml:2: \[factory\] vm_cache_numbr: unknown key; did you mean vm_cache_number\?/,
    );
    assert.match(bad.stdout, /ok {4}qemu: /);
    assert.match(bad.stdout, /guest image: /);
  });
});
