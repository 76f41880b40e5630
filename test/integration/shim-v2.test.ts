import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { runCommand } from '../../src/platform/command.js';
import { mountsUnder, unmountAllUnder } from '../../src/platform/mounts.js';
import { startCacheServer } from '../helpers/cache-server.js';
import { type Finished, finished, REPO, run } from '../helpers/cli.js';
import { busyboxImageArchive } from '../helpers/oci-image.js';
import { runtimeEnv } from '../helpers/runtime-cli.js';
import { pidsMentioning, vmDirsLeft } from '../helpers/vm-env.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const IMAGE = 'docker.io/vmcache/busybox:test';
const RUNTIME = 'io.containerd.vmcache.v2';

/**
 * containerd 1.6 drives containerd-shim-vmcache-v2 (`ctr run --runtime io.containerd.vmcache.v2`) on an image
 * (an overlay snapshot the shim mounts itself), against a private VM cache: one daemon per task, ttrpc, events.
 */
describe('containerd shim v2: ctr drives containerd-shim-vmcache-v2 (real containerd 1.6, real QEMU)', () => {
  const { env, cfg, endpoint, cliEnv } = runtimeEnv();
  // containerd finds containerd-shim-vmcache-v2 on its PATH (runtime/v2/manager.go resolveRuntimePath).
  const ctdEnv = { ...cliEnv, PATH: `${REPO}bin:${process.env.PATH}` };
  const ns = `vmcshim${process.pid}`;
  const ctd = join(env.runDir, 'containerd');
  let server: Awaited<ReturnType<typeof startCacheServer>>;
  let containerd: ChildProcess;
  let containerdDone: Promise<Finished>;
  const ctr = (args: string[], input?: string) =>
    run('ctr', ['--address', `${ctd}/c.sock`, '-n', ns, ...args], ctdEnv, input);
  const daemons = () => pidsMentioning('containerd-shim-vmcache-v2.mjs');
  /** QEMU processes of this test's run directory that a task holds (not the cache server's pool). */
  const taskVms = () => {
    const d = join(env.runDir, 'vm');
    if (!existsSync(d)) return [];
    return readdirSync(d).filter((id) => {
      try {
        const owner = JSON.parse(readFileSync(join(d, id, 'vm.json'), 'utf8')).owner?.pid;
        return owner !== undefined && owner !== server.pid;
      } catch {
        return false;
      }
    });
  };
  const waitFor = async (what: string, ok: () => Promise<boolean> | boolean, ms = 30_000) => {
    for (const end = Date.now() + ms; !(await ok()); await sleep(100))
      if (Date.now() > end) assert.fail(`timed out waiting for ${what}`);
  };

  before(async () => {
    writeFileSync(
      cfg,
      `[factory]\nvm_cache_number = 2\nvm_cache_endpoint = "${endpoint}"\n[runtime]\nstate_dir = "${env.runDir}"\n`,
    );
    server = await startCacheServer(cliEnv, endpoint);
    mkdirSync(ctd, { recursive: true });
    writeFileSync(
      `${ctd}/config.toml`,
      `version = 2\nroot = "${ctd}/root"\nstate = "${ctd}/state"\ndisabled_plugins = ["io.containerd.grpc.v1.cri"]\n[grpc]\n  address = "${ctd}/c.sock"\n`,
    );
    containerd = spawn('containerd', ['--config', `${ctd}/config.toml`], {
      env: ctdEnv,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    containerdDone = finished(containerd);
    await waitFor('containerd', () => existsSync(`${ctd}/c.sock`));
    const archive = busyboxImageArchive(join(env.runDir, 'image'), IMAGE, { Cmd: ['sh'] });
    const r = await ctr(['images', 'import', archive]);
    assert.equal(r.code, 0, r.stderr);
  });

  after(async () => {
    for (const t of ['s1', 's2', 's3']) await ctr(['task', 'rm', '-f', t]);
    await ctr(['container', 'rm', 's1', 's2', 's3']);
    containerd.kill('SIGTERM');
    const log = (await containerdDone).stderr;
    await server.stop();
    await unmountAllUnder(runCommand, env.runDir);
    assert.deepEqual(vmDirsLeft(env.runDir), [], 'VMs left behind');
    assert.deepEqual(daemons(), [], 'shim daemons left behind');
    env.cleanup();
    assert.doesNotMatch(log, /level=error.*vmcache/, 'no error in containerd log');
  });

  it('ctr run --rm: the output and the exit status, from a VM of the cache; nothing left after', async () => {
    const t0 = Date.now();
    const r = await ctr([
      'run',
      '--rm',
      '--runtime',
      RUNTIME,
      IMAGE,
      's1',
      'sh',
      '-c',
      'echo hi; uname -r; exit 4',
    ]);
    const ms = Date.now() - t0;
    assert.equal(r.code, 4, r.stderr);
    const [hi, kernel] = r.stdout.split('\n');
    assert.equal(hi, 'hi');
    assert.match(kernel!, /-amd64$/, 'the guest kernel (Debian), not the host one');
    console.log(`# ctr run --rm from the cache: ${ms} ms`);
    await waitFor('the daemon to exit', () => daemons().length === 0, 10_000);
    assert.deepEqual(taskVms(), [], 'the VM is gone with the task');
    assert.deepEqual(mountsUnder(ctd), [], 'the rootfs is unmounted');
  });
});
