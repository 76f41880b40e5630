import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { runCommand } from '../../src/platform/command.js';
import { mountsUnder, unmountAllUnder } from '../../src/platform/mounts.js';
import { busyboxRootfs } from '../helpers/bundle.js';
import { startCacheServer } from '../helpers/cache-server.js';
import { type Finished, finished, REPO, run, VMCACHE } from '../helpers/cli.js';
import { onPty } from '../helpers/pty.js';
import { runtimeEnv } from '../helpers/runtime-cli.js';
import { vmDirsLeft } from '../helpers/vm-env.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const LAUNCHER = `${REPO}bin/vmcache`;

/**
 * containerd 1.6 (through its runc shim, `ctr run --runc-binary`) and podman 4.3 (`--runtime`) drive vmcache
 * exactly as they drive runc: both from Debian, both with `--rootfs` (no image), against a private VM cache.
 */
describe('containerd and podman drive vmcache as their OCI runtime (real QEMU)', () => {
  // Every process below (containerd, its shims, conmon) passes cliEnv on to vmcache.
  const { env, cfg, endpoint, cliEnv } = runtimeEnv();
  const ns = `vmctest${process.pid}`;
  const ctd = join(env.runDir, 'containerd');
  const pod = join(env.runDir, 'podman');
  let rootfs: string;
  let server: Awaited<ReturnType<typeof startCacheServer>>;
  let containerd: ChildProcess;
  let containerdDone: Promise<Finished>;

  const ctr = (args: string[]) => run('ctr', ['--address', `${ctd}/c.sock`, '-n', ns, ...args], cliEnv);
  const podmanArgs = (args: string[]) => [
    '--root',
    `${pod}/root`,
    '--runroot',
    `${pod}/run`,
    '--tmpdir',
    `${pod}/tmp`,
    '--storage-driver',
    'vfs',
    '--cgroup-manager',
    'cgroupfs',
    '--events-backend',
    'file',
    '--runtime',
    LAUNCHER,
    // conmon does not pass podman's environment on to the runtime: point vmcache at the configuration
    // (which names the state directory) with a global flag instead, as a podman user would.
    '--runtime-flag',
    `config=${cfg}`,
    ...args,
  ];
  const podman = (args: string[]) => run('podman', podmanArgs(args), cliEnv);
  /** VMs of this test's run directory that a container holds (owned by a host-side process, not the server). */
  const containerVms = async () => {
    const r = await run(VMCACHE, ['vm', 'list', '--json'], cliEnv);
    return (JSON.parse(r.stdout) as Array<{ owner: number | null }>).filter(
      (v) => v.owner !== null && v.owner !== server.pid,
    );
  };

  before(async () => {
    rootfs = busyboxRootfs(join(env.runDir, 'busybox'));
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
      env: cliEnv,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    containerdDone = finished(containerd);
    for (let i = 0; !existsSync(`${ctd}/c.sock`); i++) {
      if (i > 300) assert.fail(`containerd did not start: ${(await containerdDone).stderr}`);
      await sleep(100);
    }
  });

  after(async () => {
    // A terminal test that failed half-way leaves its task (ct3: `run --rm` never got to remove it).
    for (const t of ['ct2', 'ct3']) await ctr(['task', 'rm', '-f', t]);
    await ctr(['container', 'rm', 'ct1', 'ct2', 'ct3']);
    await podman(['rm', '-af']);
    containerd.kill('SIGTERM');
    await containerdDone;
    await server.stop();
    // containerd's runc shim keeps runtime state in /run/containerd/runc/<namespace> (not configurable).
    rmSync(`/run/containerd/runc/${ns}`, { recursive: true, force: true });
    await unmountAllUnder(runCommand, env.runDir);
    assert.deepEqual(vmDirsLeft(env.runDir), [], 'VMs left behind');
    env.cleanup();
  });

  it('containerd: ctr run --rm prints the output and exits with the status, from a VM of the cache', async () => {
    const r = await ctr([
      'run',
      '--rm',
      '--runc-binary',
      LAUNCHER,
      '--rootfs',
      rootfs,
      'ct1',
      'sh',
      '-c',
      'echo hi; uname -r; exit 4',
    ]);
    assert.equal(r.code, 4, r.stderr);
    const [hi, kernel] = r.stdout.split('\n');
    assert.equal(hi, 'hi');
    assert.match(kernel!, /-amd64$/, 'the guest kernel (Debian), not the host one');
    assert.deepEqual(await containerVms(), [], 'the VM is gone with the container');
  });

  it('containerd: run -d, exec, ps, pause, resume, kill (SIGTERM trapped), delete', async () => {
    const d = await ctr([
      'run',
      '-d',
      '--runc-binary',
      LAUNCHER,
      '--rootfs',
      rootfs,
      'ct2',
      'sh',
      '-c',
      'trap "exit 9" TERM; while :; do sleep 1; done',
    ]);
    assert.equal(d.code, 0, d.stderr);
    assert.equal((await containerVms()).length, 1, 'one VM for the container');
    const ex = await ctr(['task', 'exec', '--exec-id', 'e1', 'ct2', 'sh', '-c', 'echo in-exec; exit 6']);
    assert.equal(ex.code, 6, ex.stderr);
    assert.equal(ex.stdout, 'in-exec\n');
    const ps = await ctr(['task', 'ps', 'ct2']);
    assert.match(ps.stdout, /^\d+\s/m);
    assert.equal((await ctr(['task', 'pause', 'ct2'])).code, 0);
    assert.match((await ctr(['task', 'ls'])).stdout, /ct2\s+\d+\s+PAUSED/);
    assert.equal((await ctr(['task', 'resume', 'ct2'])).code, 0);
    assert.equal((await ctr(['task', 'kill', 'ct2'])).code, 0);
    for (let i = 0; !/ct2\s+\d+\s+STOPPED/.test((await ctr(['task', 'ls'])).stdout); i++) {
      if (i > 100) assert.fail('ct2 never stopped');
      await sleep(100);
    }
    assert.equal((await ctr(['task', 'rm', 'ct2'])).code, 0);
    assert.equal((await ctr(['container', 'rm', 'ct2'])).code, 0);
    assert.deepEqual(readdirSync(`/run/containerd/runc/${ns}/containers`), [], 'no container state left');
    assert.deepEqual(await containerVms(), []);
  });

  it('podman: run --rm prints the output and exits with the status', async () => {
    const r = await podman([
      'run',
      '--rm',
      '--network',
      'none',
      '--rootfs',
      rootfs,
      'sh',
      '-c',
      'echo hi from podman; exit 5',
    ]);
    assert.equal(r.code, 5, r.stderr);
    assert.equal(r.stdout, 'hi from podman\n');
  });

  it('podman: run -d, exec, pause, unpause, stop (kill 15, trapped), logs, rm', async () => {
    const d = await podman([
      'run',
      '-d',
      '--name',
      'pd1',
      '--network',
      'none',
      '--rootfs',
      rootfs,
      'sh',
      '-c',
      'trap "echo term; exit 9" TERM; echo up; while :; do sleep 1; done',
    ]);
    assert.equal(d.code, 0, d.stderr);
    assert.equal(
      (await containerVms()).length,
      1,
      'one VM, from this test run directory (podman passed the environment)',
    );
    const ex = await podman(['exec', 'pd1', 'sh', '-c', 'echo in-exec; exit 6']);
    assert.equal(ex.code, 6, ex.stderr);
    assert.equal(ex.stdout, 'in-exec\n');
    assert.equal((await podman(['pause', 'pd1'])).code, 0);
    assert.match((await podman(['inspect', '--format', '{{.State.Status}}', 'pd1'])).stdout, /paused/);
    assert.equal((await podman(['unpause', 'pd1'])).code, 0);
    const stop = await podman(['stop', '-t', '10', 'pd1']);
    assert.equal(stop.code, 0, stop.stderr);
    assert.match((await podman(['inspect', '--format', '{{.State.ExitCode}}', 'pd1'])).stdout, /^9$/m);
    assert.equal((await podman(['logs', 'pd1'])).stdout, 'up\nterm\n');
    assert.equal((await podman(['rm', 'pd1'])).code, 0);
    assert.deepEqual(await containerVms(), []);
    assert.deepEqual(mountsUnder(join(env.runDir, 'vm')), []);
  });

  it('podman: run -it gets a terminal (console socket), follows resizes, passes keys and the exit status', async () => {
    const t = onPty(
      ['podman', ...podmanArgs(['run', '-it', '--rm', '--network', 'none', '--rootfs', rootfs, 'sh'])],
      cliEnv,
      30,
      100,
    );
    await t.expect(/\/ # /);
    t.send('tty; stty size\r');
    await t.expect(/\/dev\/pts\/\d+\r?\n30 100/);
    t.resize(40, 120);
    // podman passes the change to conmon, which resizes the pty vmcache handed over; the guest's follows.
    let size = '';
    for (let i = 0; i < 50 && size !== '40 120'; i++) {
      t.send('stty size\r');
      size = (await t.expect(/\r?\n\d+ \d+\r?\n/)).trim();
      if (size !== '40 120') await sleep(200);
    }
    assert.equal(size, '40 120', t.output());
    // The guest's line discipline: ^C interrupts the foreground command, not the shell.
    t.send('sleep 100\r');
    await sleep(1_000);
    t.send('\x03');
    await t.expect(/\/ # /, 30_000);
    t.send('exit 3\r');
    assert.equal(await t.exited, 3, t.output());
    assert.deepEqual(await containerVms(), []);
  });

  it('containerd: ctr run -t (through its runc shim and the console socket) gets a terminal', async () => {
    const t = onPty(
      [
        'ctr',
        '--address',
        `${ctd}/c.sock`,
        '-n',
        ns,
        'run',
        '-t',
        '--rm',
        '--runc-binary',
        LAUNCHER,
        '--rootfs',
        rootfs,
        'ct3',
        'sh',
      ],
      cliEnv,
      33,
      77,
    );
    await t.expect(/\/ # /);
    t.send('stty size; tty\r');
    await t.expect(/33 77\r*\n\/dev\/pts\/\d+/);
    t.send('exit 5\r');
    assert.equal(await t.exited, 5, t.output());
    assert.deepEqual(await containerVms(), []);
  });

  it('podman: exec -it gets a terminal of its own in a running container', async () => {
    const d = await podman([
      'run',
      '-d',
      '--name',
      'pd2',
      '--network',
      'none',
      '--rootfs',
      rootfs,
      'sh',
      '-c',
      'while :; do sleep 1; done',
    ]);
    assert.equal(d.code, 0, d.stderr);
    try {
      const t = onPty(['podman', ...podmanArgs(['exec', '-it', 'pd2', 'sh'])], cliEnv, 25, 90);
      await t.expect(/\/ # /);
      t.send('stty size; test -t 0 && echo on-a-tty\r');
      await t.expect(/25 90\r?\non-a-tty/);
      t.send('exit 4\r');
      assert.equal(await t.exited, 4, t.output());
    } finally {
      await podman(['rm', '-f', '-t', '0', 'pd2']);
    }
    assert.deepEqual(await containerVms(), []);
  });
});
