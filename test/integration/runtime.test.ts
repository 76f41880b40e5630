import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { mountsUnder } from '../../src/platform/mounts.js';
import { identify, isAlive } from '../../src/platform/process.js';
import { busyboxBundle, busyboxRootfs } from '../helpers/bundle.js';
import { startCacheServer } from '../helpers/cache-server.js';
import { finished, VMCACHE } from '../helpers/cli.js';
import { runtimeEnv } from '../helpers/runtime-cli.js';
import { vmDirsLeft } from '../helpers/vm-env.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('OCI runtime (runc-compatible CLI, busybox bundles, real QEMU)', () => {
  const { env, root, cfg, endpoint, cliEnv, vmc, vmcToFile } = runtimeEnv();
  let rootfs: string;
  let server: Awaited<ReturnType<typeof startCacheServer>>;
  const state = async (id: string) => {
    const r = await vmc(['state', id]);
    assert.equal(r.code, 0, r.stderr);
    return JSON.parse(r.stdout) as { status: string; pid: number; id: string; bundle: string };
  };
  const waitStatus = async (id: string, status: string, ms = 30_000) => {
    const deadline = Date.now() + ms;
    for (;;) {
      const s = await state(id);
      if (s.status === status) return s;
      if (Date.now() > deadline) assert.fail(`${id} stayed ${s.status}, expected ${status}`);
      await sleep(100);
    }
  };
  const containersLeft = () =>
    existsSync(join(root, 'containers')) ? readdirSync(join(root, 'containers')) : [];
  const bundle = (name: string, o: Parameters<typeof busyboxBundle>[2]) =>
    busyboxBundle(join(env.runDir, 'bundles', name), rootfs, o);

  before(async () => {
    rootfs = busyboxRootfs(join(env.runDir, 'busybox'));
    writeFileSync(cfg, `[factory]\nvm_cache_number = 2\nvm_cache_endpoint = "${endpoint}"\n`);
    server = await startCacheServer(cliEnv, endpoint);
  });

  after(async () => {
    for (const id of containersLeft()) await vmc(['delete', '--force', id]);
    await server.stop();
    assert.deepEqual(mountsUnder(env.runDir), [], 'mounts left behind');
    assert.deepEqual(vmDirsLeft(env.runDir), [], 'VMs left behind');
    env.cleanup();
  });

  it('run: stdout, stderr, stdin, env (values with =), cwd, user, hostname and the exit status pass through', async () => {
    const b = bundle('io', {
      args: ['sh', '-c', 'echo "$GREETING"; pwd; id -u; id -g; hostname; cat; echo oops >&2; exit 3'],
      env: ['GREETING=a=b=c'],
      cwd: '/tmp',
      user: { uid: 1000, gid: 1000 },
      hostname: 'box',
    });
    const r = await vmc(['run', '--bundle', b, 'io1'], 'from-stdin\n');
    assert.equal(r.code, 3, r.stderr);
    assert.equal(r.stdout, 'a=b=c\n/tmp\n1000\n1000\nbox\nfrom-stdin\n');
    assert.equal(r.stderr, 'oops\n');
    assert.deepEqual(containersLeft(), [], 'run deletes the container afterwards');
  });

  it('create → start → kill: created, running, stopped; pid file, state, ps, exec, pause and resume', async () => {
    const b = bundle('life', {
      args: ['sh', '-c', 'trap "echo got-term; exit 7" TERM; echo started; while :; do sleep 0.1; done'],
    });
    const out = join(env.runDir, 'life.out');
    const pidFile = join(env.runDir, 'life.pid');
    assert.equal(
      await vmcToFile(['create', '--bundle', b, '--pid-file', pidFile, 'c1'], out),
      0,
      readFileSync(out, 'utf8'),
    );
    const pidText = readFileSync(pidFile, 'utf8');
    assert.match(pidText, /^[0-9]+$/, 'the bare pid, no newline');
    const pid = Number(pidText);
    let s = await state('c1');
    assert.equal(s.status, 'created');
    assert.equal(s.pid, pid);
    assert.equal(s.bundle, b);
    assert.ok(identify(pid), 'the host-side process is alive');

    const dup = await vmc(['create', '--bundle', b, 'c1']);
    assert.notEqual(dup.code, 0);
    assert.match(dup.stderr, /already exists.*VMC_ERR_CONTAINER_EXISTS/);

    assert.equal((await vmc(['start', 'c1'])).code, 0);
    s = await state('c1');
    assert.equal(s.status, 'running');
    const again = await vmc(['start', 'c1']);
    assert.notEqual(again.code, 0);
    assert.match(again.stderr, /c1 is running; start needs created/);
    const del = await vmc(['delete', 'c1']);
    assert.notEqual(del.code, 0);
    assert.match(del.stderr, /running.*--force/);

    const ps = await vmc(['ps', '--format', 'json', 'c1']);
    assert.deepEqual(JSON.parse(ps.stdout), [pid]);
    const ex = await vmc(['exec', 'c1', '--', 'sh', '-c', 'echo second; cat; exit 5'], 'in\n');
    assert.equal(ex.code, 5, ex.stderr);
    assert.equal(ex.stdout, 'second\nin\n');
    const nope = await vmc(['exec', 'c1', '--', 'nope']);
    assert.notEqual(nope.code, 0);
    assert.match(nope.stderr, /executable file not found/);

    const execPid = join(env.runDir, 'exec.pid');
    // The relay keeps the caller's stdio (as runc's exec'd process does), so give it a file, not a pipe.
    assert.equal(
      await vmcToFile(['exec', '--detach', '--pid-file', execPid, 'c1', '--', 'sleep', '600'], out),
      0,
    );
    const relay = Number(readFileSync(execPid, 'utf8'));
    assert.ok(identify(relay), 'the exec relay stands for the process');
    assert.deepEqual(
      JSON.parse((await vmc(['ps', '--format', 'json', 'c1'])).stdout).sort(),
      [pid, relay].sort(),
    );

    assert.equal((await vmc(['pause', 'c1'])).code, 0);
    assert.equal((await state('c1')).status, 'paused');
    assert.equal((await vmc(['resume', 'c1'])).code, 0);
    assert.equal((await state('c1')).status, 'running');

    assert.equal((await vmc(['kill', 'c1', 'TERM'])).code, 0);
    s = await waitStatus('c1', 'stopped');
    assert.equal(s.pid, 0);
    assert.match(readFileSync(out, 'utf8'), /started\n(.|\n)*got-term\n/);
    const late = await vmc(['kill', 'c1', '9']);
    assert.notEqual(late.code, 0, 'kill of a stopped container is refused');
    // runc's words, which containerd's shim reads as "already gone" (it kills before it deletes).
    assert.match(late.stderr, /container not running/);
    assert.equal((await vmc(['delete', 'c1'])).code, 0);
    assert.deepEqual(containersLeft(), []);
    assert.ok(!identify(pid) || !isAlive(identify(pid)!), 'the host-side process exited');
    assert.ok(!identify(relay) || !isAlive(identify(relay)!), 'the exec relay exited with the container');
    assert.deepEqual(mountsUnder(env.runDir), []);
  });

  it('runs two containers at once (run --detach), lists them, and delete --force stops them', async () => {
    const b = bundle('pair', { args: ['sh', '-c', 'while :; do sleep 1; done'] });
    const out = join(env.runDir, 'pair.out');
    const codes = await Promise.all(
      ['p1', 'p2'].map((id) => vmcToFile(['run', '-d', '--bundle', b, id], out)),
    );
    assert.deepEqual(codes, [0, 0], readFileSync(out, 'utf8'));
    const l = await vmc(['list', '--format', 'json']);
    const listed = JSON.parse(l.stdout) as Array<{ id: string; status: string }>;
    assert.deepEqual(
      listed.map((c) => [c.id, c.status]),
      [
        ['p1', 'running'],
        ['p2', 'running'],
      ],
    );
    assert.equal((await vmc(['delete', '--force', 'p1'])).code, 0);
    assert.equal((await vmc(['delete', '--force', 'p2'])).code, 0);
    assert.deepEqual(containersLeft(), []);
    assert.equal((await vmc(['delete', '--force', 'p2'])).code, 0, 'deleting again with --force is quiet');
  });

  it('run in the foreground relays a signal sent to it; a killed host-side process leaks nothing', async () => {
    const b = bundle('sig', {
      args: ['sh', '-c', 'trap "echo got-term; exit 7" TERM; echo ready; while :; do sleep 0.1; done'],
    });
    const child = spawn(VMCACHE, ['--root', root, 'run', '--bundle', b, 's1'], {
      env: cliEnv,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const done = finished(child);
    let out = '';
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
    });
    const deadline = Date.now() + 60_000;
    while (!out.includes('ready')) {
      if (Date.now() > deadline) assert.fail(`never started: ${(await done).stderr}`);
      await sleep(100);
    }
    child.kill('SIGTERM'); // to vmcache run itself: it stands for the container and passes the signal on
    const r = await done;
    assert.equal(r.code, 7, r.stderr);
    assert.match(out, /ready\n(.|\n)*got-term\n/);
    assert.deepEqual(containersLeft(), []);

    // kill -9 of the host-side process: the container reads as stopped, and delete stops its VM.
    const b2 = bundle('crash', { args: ['sh', '-c', 'while :; do sleep 1; done'] });
    const file = join(env.runDir, 'crash.out');
    assert.equal(await vmcToFile(['run', '-d', '--bundle', b2, 'k1'], file), 0, readFileSync(file, 'utf8'));
    const pid = (await state('k1')).pid;
    const { vmId } = JSON.parse(readFileSync(join(root, 'containers', 'k1', 'state.json'), 'utf8')) as {
      vmId: string;
    };
    assert.ok(vmDirsLeft(env.runDir).includes(vmId));
    process.kill(pid, 'SIGKILL');
    await waitStatus('k1', 'stopped');
    assert.equal((await vmc(['delete', 'k1'])).code, 0);
    assert.ok(!vmDirsLeft(env.runDir).includes(vmId), "the crashed container's VM is gone");
    assert.deepEqual(containersLeft(), []);
  });

  it('update: new cgroup limits seen inside the container, more memory hot-plugged; events --stats reports them', async () => {
    const b = bundle('upd', {
      args: ['sh', '-c', 'while :; do sleep 1; done'],
      resources: { memory: { limit: 64 * 2 ** 20 } },
    });
    const out = join(env.runDir, 'u1.out');
    assert.equal(await vmcToFile(['run', '-d', '--bundle', b, 'u1'], out), 0, readFileSync(out, 'utf8'));
    const inside = async () =>
      (
        await vmc([
          'exec',
          'u1',
          '--',
          'sh',
          '-c',
          'cat /sys/fs/cgroup/memory.max /sys/fs/cgroup/pids.max /sys/fs/cgroup/cpu.max; grep MemTotal /proc/meminfo',
        ])
      ).stdout.split('\n');
    const [mem0, , , total0] = await inside();
    assert.equal(mem0, String(64 * 2 ** 20));
    const up = await vmc(['update', '--memory', '192m', '--pids-limit', '50', 'u1']);
    assert.equal(up.code, 0, up.stderr);
    const r = await vmc(
      ['update', '-r', '-', 'u1'],
      JSON.stringify({ cpu: { quota: 50_000, period: 100_000, shares: 512 } }),
    );
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /not applied by vmcache.*cpu.shares/);
    const [mem, pids, cpu, total] = await inside();
    assert.deepEqual([mem, pids, cpu], [String(192 * 2 ** 20), '50', '50000 100000']);
    const kb = (line: string) => Number(/(\d+) kB/.exec(line)![1]);
    // 128 MiB more (192 - 64) was hot-plugged before the limit was raised.
    assert.ok(kb(total!) - kb(total0!) >= 120 * 1024, `${total0} → ${total}`);
    const ev = await vmc(['events', '--stats', 'u1']);
    assert.equal(ev.code, 0, ev.stderr);
    const line = JSON.parse(ev.stdout) as {
      type: string;
      id: string;
      data: {
        memory: { usage: { limit: number; usage: number } };
        pids: { limit: number; current: number };
        cpu: { usage: { total: number } };
      };
    };
    assert.equal(line.type, 'stats');
    assert.equal(line.id, 'u1');
    assert.equal(line.data.memory.usage.limit, 192 * 2 ** 20);
    assert.ok(line.data.memory.usage.usage > 0);
    assert.equal(line.data.pids.limit, 50);
    assert.ok(line.data.pids.current >= 2, 'sh and sleep');
    assert.ok(line.data.cpu.usage.total > 0);
    // Without --stats: a line per interval until the container stops.
    const stream = vmc(['events', '--interval', '200ms', 'u1']);
    await sleep(1_500);
    assert.equal((await vmc(['kill', 'u1', 'KILL'])).code, 0);
    const streamed = await stream;
    assert.equal(streamed.code, 0, streamed.stderr);
    assert.ok(streamed.stdout.trim().split('\n').length >= 3, streamed.stdout);
    await waitStatus('u1', 'stopped');
    const late = await vmc(['update', '--memory', '100m', 'u1']);
    assert.match(late.stderr, /container u1 is stopped; update needs running or paused/);
    assert.equal((await vmc(['delete', 'u1'])).code, 0);
  });

  it('a program that does not exist: start fails naming it; delete leaves nothing', async () => {
    const b = bundle('nope', { args: ['nope-not-here'] });
    const out = join(env.runDir, 'nope.out');
    assert.equal(await vmcToFile(['create', '--bundle', b, 'n1'], out), 0);
    const r = await vmc(['start', 'n1']);
    assert.notEqual(r.code, 0);
    assert.match(
      r.stderr,
      /exec: "nope-not-here": executable file not found in \$PATH.*VMC_ERR_CONTAINER_START/,
    );
    assert.equal((await vmc(['delete', 'n1'])).code, 0, 'a created container is deleted without --force');
    assert.deepEqual(containersLeft(), []);
  });

  it('bad input: a clear error naming what is wrong, a non-zero exit, nothing created', async () => {
    const bad = join(env.runDir, 'bundles', 'bad');
    mkdirSync(bad, { recursive: true });
    const cases: Array<[string, string[], RegExp, () => void]> = [
      [
        'a missing bundle',
        ['create', '--bundle', '/nonexistent/b', 'x1'],
        /not a directory.*VMC_ERR_OCI_BUNDLE/,
        () => {},
      ],
      ['no config.json', ['create', '--bundle', bad, 'x1'], /no readable config.json/, () => {}],
      [
        'invalid JSON',
        ['create', '--bundle', bad, 'x1'],
        /not valid JSON.*VMC_ERR_OCI_INVALID/,
        () => writeFileSync(join(bad, 'config.json'), '{"ociVersion": '),
      ],
      [
        'a rootfs that does not exist',
        ['create', '--bundle', bad, 'x1'],
        /root.path .*missing-rootfs is not a directory/,
        () => busyboxBundle(bad, join(env.runDir, 'missing-rootfs'), { args: ['true'] }),
      ],
      [
        'a terminal without a console socket',
        ['create', '--bundle', bad, 'x1'],
        /process.terminal is true: give --console-socket.*VMC_ERR_CLI_USAGE/,
        () => busyboxBundle(bad, rootfs, { args: ['sh'], terminal: true }),
      ],
      [
        'file descriptors to preserve',
        ['run', '--preserve-fds', '2', '--bundle', bad, 'x1'],
        /--preserve-fds "2": the container's process runs in a VM.*VMC_ERR_OCI_UNSUPPORTED/,
        () => busyboxBundle(bad, rootfs, { args: ['true'] }),
      ],
      ['an update of an unknown id', ['update', '--memory', '64m', 'ghost'], /does not exist/, () => {}],
      ['an update without a limit', ['update', 'ghost'], /update needs --memory/, () => {}],
      [
        'a bad --interval',
        ['events', '--interval', '5 parsecs', 'ghost'],
        /--interval must be a duration/,
        () => {},
      ],
      [
        'a bind mount of a source that does not exist',
        ['create', '--bundle', bad, 'x1'],
        /mounts\[7\].source "\/nonexistent\/src"/,
        () =>
          busyboxBundle(bad, rootfs, {
            args: ['true'],
            mounts: [{ destination: '/data', type: 'bind', source: '/nonexistent/src', options: ['rbind'] }],
          }),
      ],
      ['an invalid id', ['create', '--bundle', bad, '../x'], /invalid container id/, () => {}],
      [
        'state of an unknown id',
        ['state', 'ghost'],
        /container ghost does not exist.*VMC_ERR_CONTAINER_NOT_FOUND/,
        () => {},
      ],
      ['start of an unknown id', ['start', 'ghost'], /does not exist/, () => {}],
      ['kill of an unknown id', ['kill', 'ghost', 'KILL'], /does not exist/, () => {}],
      ['delete of an unknown id', ['delete', 'ghost'], /does not exist/, () => {}],
      ['an unknown signal', ['kill', 'ghost', 'SIGNOPE'], /unknown signal/, () => {}],
    ];
    for (const [what, args, re, setup] of cases) {
      setup();
      const r = await vmc(args);
      assert.notEqual(r.code, 0, `${what}: ${r.stderr}`);
      assert.match(r.stderr, re, what);
      assert.deepEqual(containersLeft(), [], `${what}: nothing created`);
    }
    // containerd reads the reason from --log: a logrus-style JSON line at level error.
    const log = join(env.runDir, 'runtime.log');
    const r = await vmc(['--log', log, '--log-format', 'json', 'state', 'ghost']);
    assert.notEqual(r.code, 0);
    const last = JSON.parse(readFileSync(log, 'utf8').trim().split('\n').pop()!) as Record<string, string>;
    assert.equal(last.level, 'error');
    assert.match(last.msg!, /container ghost does not exist/);
    assert.deepEqual(vmDirsLeft(env.runDir).length <= 2, true, 'only the pool VMs exist');
  });
});
