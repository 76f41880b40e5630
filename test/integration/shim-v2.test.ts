import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { runCommand } from '../../src/platform/command.js';
import { mountsUnder, unmountAllUnder } from '../../src/platform/mounts.js';
import { startCacheServer } from '../helpers/cache-server.js';
import { type Finished, finished, REPO, run, VMCACHE } from '../helpers/cli.js';
import { busyboxImageArchive } from '../helpers/oci-image.js';
import { onPty } from '../helpers/pty.js';
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
  /** containerd's log so far: the shim daemons' `log` FIFOs are copied into it. */
  let ctdLog = '';
  const ctr = (args: string[], input?: string) =>
    run('ctr', ['--address', `${ctd}/c.sock`, '-n', ns, ...args], ctdEnv, input, 60_000);
  /** This test's shim daemons (their command line names the test's namespace; its words end in NULs). */
  const daemons = () =>
    pidsMentioning(`-namespace\0${ns}\0`).filter((p) =>
      pidsMentioning('containerd-shim-vmcache-v2.mjs').includes(p),
    );
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

  /** Waits until the cache holds `n` ready VMs, so that what follows is timed from the cache. */
  const poolReady = (n: number) =>
    waitFor(
      `${n} ready VMs in the cache`,
      async () => {
        const r = await run(VMCACHE, ['factory', 'status', '--json'], cliEnv, undefined, 30_000);
        return r.code === 0 && JSON.parse(r.stdout).vmstatus.length >= n;
      },
      120_000,
    );
  /** The bundle containerd made for task `id` (its address, shim.pid, log and rootfs are there). */
  const bundleOf = (id: string) => join(ctd, 'state', 'io.containerd.runtime.v2.task', ns, id);
  const taskLine = async (id: string) =>
    (await ctr(['task', 'ls'])).stdout.split('\n').find((l) => l.split(/\s+/)[0] === id) ?? '';

  /** Once task `id` has been killed: waits for it to stop, removes it and its container, and checks that
   * its daemon and VM went with it. */
  const removeStopped = async (id: string) => {
    await waitFor(`${id} to stop`, async () => /STOPPED/.test(await taskLine(id)));
    const rm = await ctr(['task', 'rm', id]);
    assert.equal(rm.code, 0, rm.stderr);
    assert.equal((await ctr(['container', 'rm', id])).code, 0);
    await waitFor('the daemon to exit', () => daemons().length === 0, 10_000);
    assert.deepEqual(taskVms(), [], `the VM of ${id} is gone`);
  };

  /** Starts containerd on the test's configuration (again, after a restart: the same root and state). */
  const startContainerd = async () => {
    containerd = spawn('containerd', ['--config', `${ctd}/config.toml`], {
      env: ctdEnv,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    containerdDone = finished(containerd);
    containerd.stderr?.on('data', (d: Buffer) => {
      ctdLog += d.toString();
    });
    await waitFor('containerd', async () => (await ctr(['version'])).code === 0);
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
    await startContainerd();
    const archive = busyboxImageArchive(join(env.runDir, 'image'), IMAGE, { Cmd: ['sh'] });
    const r = await ctr(['images', 'import', archive]);
    assert.equal(r.code, 0, r.stderr);
  });

  after(async () => {
    const ids = ['s0', 's1', 's2', 's3', 's4', 's5', 's6', 's7'];
    for (const t of ids) await ctr(['task', 'rm', '-f', t]);
    await ctr(['container', 'rm', ...ids]);
    containerd.kill('SIGTERM');
    await containerdDone;
    const log = ctdLog;
    const left = daemons();
    for (const p of left) process.kill(p, 'SIGKILL'); // a failed test's: server.stop() then reaps their VMs
    await server.stop();
    assert.deepEqual(left, [], 'shim daemons left behind');
    await unmountAllUnder(runCommand, env.runDir);
    assert.deepEqual(vmDirsLeft(env.runDir), [], 'VMs left behind');
    env.cleanup();
    assert.doesNotMatch(log, /level=error.*vmcache/, 'no error in containerd log');
  });

  it('ctr run --rm: the output and the exit status, from a VM of the cache; nothing left after', async () => {
    await poolReady(2);
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
    const serving = /msg="daemon serving".* ms=(\d+)/.exec(ctdLog);
    console.log(`# ctr run --rm from the cache: ${ms} ms; shim daemon start to serving: ${serving?.[1]} ms`);
    await waitFor('the daemon to exit', () => daemons().length === 0, 10_000);
    assert.deepEqual(taskVms(), [], 'the VM is gone with the task');
    assert.deepEqual(mountsUnder(ctd), [], 'the rootfs is unmounted');

    // A program that is not there: Start fails naming it, ctr gets its answer and removes the container.
    const nope = await ctr(['run', '--rm', '--runtime', RUNTIME, IMAGE, 's0', 'nope']);
    assert.equal(nope.signal, null, `ctr returned on its own: ${nope.stderr}`);
    assert.notEqual(nope.code, 0);
    assert.match(nope.stderr, /"nope": executable file not found/);
    await waitFor('the daemon to exit', () => daemons().length === 0, 10_000);
    assert.deepEqual(taskVms(), [], "the failed task's VM is gone");
    assert.deepEqual(mountsUnder(ctd), []);
  });

  it('run -d, exec (stdout, stdin, exit status), ps, pause, resume, kill (SIGTERM trapped), delete', async () => {
    await poolReady(1);
    const d = await ctr([
      'run',
      '-d',
      '--runtime',
      RUNTIME,
      IMAGE,
      's2',
      'sh',
      '-c',
      'trap "exit 7" TERM; while :; do sleep 0.1; done',
    ]);
    assert.equal(d.code, 0, d.stderr);
    assert.match(await taskLine('s2'), /RUNNING/);
    const ex = await ctr(['task', 'exec', '--exec-id', 'e1', 's2', 'sh', '-c', 'echo in-exec; exit 6']);
    assert.equal(ex.code, 6, ex.stderr);
    assert.equal(ex.stdout, 'in-exec\n');
    const cat = await ctr(
      ['task', 'exec', '--exec-id', 'e2', 's2', 'sh', '-c', 'cat; exit 5'],
      'from-stdin\n',
    );
    assert.equal(cat.code, 5, cat.stderr);
    assert.equal(cat.stdout, 'from-stdin\n', 'stdin reaches the exec, and its EOF (CloseIO) too');
    // A program that is not there: Start fails naming it, and ctr's Delete of the exec is answered (ctr
    // waited for it until killed before).
    const nope = await ctr(['task', 'exec', '--exec-id', 'e3', 's2', 'nope']);
    assert.equal(nope.signal, null, 'ctr returned on its own');
    assert.notEqual(nope.code, 0);
    assert.match(nope.stderr, /nope/);
    const ps = await ctr(['task', 'ps', 's2']);
    assert.equal(ps.code, 0, ps.stderr);
    assert.match(ps.stdout, /^\s*\d+/m);
    assert.equal((await ctr(['task', 'pause', 's2'])).code, 0);
    assert.match(await taskLine('s2'), /PAUSED/);
    assert.equal((await ctr(['task', 'resume', 's2'])).code, 0);
    assert.match(await taskLine('s2'), /RUNNING/);
    assert.equal((await ctr(['task', 'kill', 's2'])).code, 0);
    await removeStopped('s2');
  });

  it('terminals: ctr run -t and ctr task exec -t get a pty in the guest, sized by ResizePty and resized', async () => {
    await poolReady(1);
    const ctrArgs = ['ctr', '--address', `${ctd}/c.sock`, '-n', ns];
    // ctr sends its terminal's size after Start: the shell waits for it (at most 10 s) before printing it.
    const waitSize = (size: string) =>
      `i=0; until [ "$(stty size)" = "${size}" ] || [ $i -ge 100 ]; do sleep 0.1; i=$((i+1)); done`;
    const run = onPty(
      [...ctrArgs, 'run', '-t', '--rm', '--runtime', RUNTIME, IMAGE, 's5', 'sh', '-c'].concat(
        `tty; ${waitSize('33 101')}; echo "size $(stty size)"; exit 3`,
      ),
      ctdEnv,
      33,
      101,
      120_000,
    );
    await run.expect(/\/dev\/pts\/\d+/);
    await run.expect(/size 33 101/);
    assert.equal(await run.exited, 3, run.output());
    await waitFor('the daemon of s5 to exit', () => daemons().length === 0, 10_000);

    await poolReady(1);
    const d = await ctr(['run', '-d', '--runtime', RUNTIME, IMAGE, 's6', 'sleep', '600']);
    assert.equal(d.code, 0, d.stderr);
    const ex = onPty(
      [...ctrArgs, 'task', 'exec', '-t', '--exec-id', 't1', 's6', 'sh'],
      ctdEnv,
      30,
      90,
      120_000,
    );
    await ex.expect(/\/ # /); // the prompt
    ex.send(`tty; ${waitSize('30 90')}; echo "size $(stty size)"\n`);
    await ex.expect(/\/dev\/pts\/\d+/);
    await ex.expect(/size 30 90/);
    ex.resize(40, 120); // ctr's SIGWINCH → ResizePty → the guest pty
    ex.send(`${waitSize('40 120')}; echo "now $(stty size)"; exit 5\n`);
    await ex.expect(/now 40 120/);
    assert.equal(await ex.exited, 5, ex.output());
    const k = await ctr(['task', 'kill', '-s', 'SIGKILL', 's6']);
    assert.equal(k.code, 0, k.stderr);
    await removeStopped('s6');
  });

  it('ctr task metrics (cgroup v2 Metrics from the guest), --memory-limit (read in the guest), an OOM event, ps', async () => {
    await poolReady(1);
    // ctr 1.6 has no `task update`: the CRI test drives Update (UpdateContainerResources).
    const limit = ['--memory-limit', String(64 << 20)];
    const d = await ctr(['run', '-d', '--runtime', RUNTIME, ...limit, IMAGE, 's7', 'sleep', '600']);
    assert.equal(d.code, 0, d.stderr);
    const metric = async (name: string) => {
      const m = await ctr(['task', 'metrics', 's7']);
      assert.equal(m.code, 0, m.stderr);
      const v = new RegExp(`^${name.replace('.', '\\.')}\\s+(\\d+)`, 'm').exec(m.stdout);
      assert.ok(v, `${name} in ${m.stdout}`);
      return Number(v[1]);
    };
    assert.ok((await metric('memory.usage')) > 0, 'memory in use');
    assert.ok((await metric('pids.current')) >= 1);
    const cpu0 = await metric('cpu.usage_usec');
    const busy = await ctr([
      'task',
      'exec',
      '--exec-id',
      'm1',
      's7',
      'sh',
      '-c',
      'i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done',
    ]);
    assert.equal(busy.code, 0, busy.stderr);
    assert.ok((await metric('cpu.usage_usec')) > cpu0, 'CPU use grows with load');
    const ps = await ctr(['task', 'ps', 's7']);
    assert.match(ps.stdout, /^\s*\d+/m, 'guest pids');

    // ctr's spec mounts no /sys/fs/cgroup in the container: the limit shows in the Metrics, read in the guest.
    assert.equal(await metric('memory.usage_limit'), 64 << 20, 'the limit of the guest cgroup');

    // A process past the limit is killed by the guest kernel: containerd gets /tasks/oom for s7.
    const events = spawn('ctr', ['--address', `${ctd}/c.sock`, 'events'], { env: ctdEnv });
    let seen = '';
    events.stdout.on('data', (b: Buffer) => {
      seen += b.toString();
    });
    try {
      await sleep(500); // subscribed
      const hog = await ctr([
        'task',
        'exec',
        '--exec-id',
        'm3',
        's7',
        'sh',
        '-c',
        'head -c 200000000 /dev/zero | tail',
      ]);
      assert.notEqual(hog.code, 0, 'the hog was killed');
      await waitFor('the /tasks/oom event of s7', () => /\/tasks\/oom .*"s7"/.test(seen), 15_000);
    } finally {
      events.kill();
    }
    assert.match(await taskLine('s7'), /RUNNING/, 'the container itself lives on');
    assert.equal((await ctr(['task', 'kill', '-s', 'SIGKILL', 's7'])).code, 0);
    await removeStopped('s7');
  });

  it('kill -9 of the daemon: containerd runs delete, the task exits 137, no QEMU, mount or socket is left', async () => {
    await poolReady(1);
    const d = await ctr(['run', '-d', '--runtime', RUNTIME, IMAGE, 's3', 'sleep', '600']);
    assert.equal(d.code, 0, d.stderr);
    const b = bundleOf('s3');
    const pid = Number(readFileSync(join(b, 'shim.pid'), 'utf8'));
    const socket = readFileSync(join(b, 'address'), 'utf8').replace('unix://', '');
    assert.ok(existsSync(socket));
    assert.equal(taskVms().length, 1, 'the task holds one VM');
    process.kill(pid, 'SIGKILL');
    await waitFor(
      'containerd to clean up after the dead shim',
      async () => !/RUNNING/.test(await taskLine('s3')),
    );
    await waitFor('the VM to go', () => taskVms().length === 0, 20_000);
    // The shim's `delete` unmounts the rootfs after the VM, and removes the socket last: waits for each.
    await waitFor('the rootfs mount to go', () => mountsUnder(b).length === 0, 10_000);
    await waitFor('the shim socket to go', () => !existsSync(socket), 10_000);
    assert.deepEqual(daemons(), []);
  });

  it('a restart of containerd: the daemon keeps serving, containerd reconnects through `address`, events resume', async () => {
    await poolReady(1);
    const d = await ctr([
      'run',
      '-d',
      '--runtime',
      RUNTIME,
      IMAGE,
      's4',
      'sh',
      '-c',
      'trap "exit 3" TERM; while :; do sleep 0.1; done',
    ]);
    assert.equal(d.code, 0, d.stderr);
    const pid = Number(readFileSync(join(bundleOf('s4'), 'shim.pid'), 'utf8'));
    containerd.kill('SIGTERM');
    await containerdDone;
    await sleep(500);
    assert.deepEqual(daemons(), [pid], 'the daemon outlives containerd');
    assert.equal(taskVms().length, 1, 'and so does its VM');
    await startContainerd();
    assert.match(await taskLine('s4'), /RUNNING/, 'the new containerd reloads the task from its bundle');
    const ex = await ctr(['task', 'exec', '--exec-id', 'r1', 's4', 'sh', '-c', 'echo after-restart; exit 2']);
    assert.deepEqual([ex.code, ex.stdout], [2, 'after-restart\n'], ex.stderr);
    // The task's exit event reaches the new containerd: the forwarder reconnects to $TTRPC_ADDRESS.
    const events = spawn('ctr', ['--address', `${ctd}/c.sock`, 'events'], { env: ctdEnv });
    let seen = '';
    events.stdout.on('data', (b: Buffer) => {
      seen += b.toString();
    });
    try {
      await sleep(500); // subscribed
      assert.equal((await ctr(['task', 'kill', 's4'])).code, 0);
      await waitFor('the /tasks/exit event of s4', () => /\/tasks\/exit .*"s4".*"exit_status":3/.test(seen));
    } finally {
      events.kill();
    }
    await removeStopped('s4');
  });
});
