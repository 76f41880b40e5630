import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { nullLogger } from '../../../src/platform/logger.js';
import { Metrics } from '../../../src/protocol/shim/generated/containerd/cgroups/v2/metrics.js';
import { TaskDefinition } from '../../../src/protocol/shim/generated/containerd/runtime/task/v2/shim.js';
import { Status } from '../../../src/protocol/shim/generated/containerd/types/task/task.js';
import { TtrpcClient } from '../../../src/protocol/ttrpc/client.js';
import { TtrpcServer } from '../../../src/protocol/ttrpc/server.js';
import { RpcCode, rpcCodeOf } from '../../../src/protocol/ttrpc/status.js';
import type { TaskEvent } from '../../../src/shim/events.js';
import { METRICS_TYPE_URL } from '../../../src/shim/metrics.js';
import { PROCESS_TYPE_URL, RESOURCES_TYPE_URL } from '../../../src/shim/oci-any.js';
import { TaskService } from '../../../src/shim/task-service.js';
import { taskStatusOf } from '../../../src/shim/task-status.js';
import { duplexPair } from '../../helpers/duplex-pair.js';
import { ManualClock, settle } from '../../helpers/manual-clock.js';
import { cgroupStats, FakeBackend, fakeIo } from './fake-shim.js';

const PID = 4242;

/** The Task service over fakes, served by a real TtrpcServer on an in-memory duplex, and a client for it. */
function setup() {
  const backend = new FakeBackend();
  const io = fakeIo();
  const events: TaskEvent[] = [];
  const clock = new ManualClock();
  let shutdowns = 0;
  const service = new TaskService({
    backend,
    openIo: io.open,
    events: { publish: (e) => events.push(e) },
    clock,
    logger: nullLogger,
    pid: PID,
    livenessMs: 1_000,
    onShutdown: () => shutdowns++,
  });
  const server = new TtrpcServer({ statusOf: taskStatusOf });
  server.register(TaskDefinition, service.handlers());
  const [a, b] = duplexPair();
  server.serve(a);
  const client = new TtrpcClient(b);
  const call = <K extends keyof (typeof TaskDefinition)['methods'] & string>(
    key: K,
    req: Parameters<typeof client.call<typeof TaskDefinition, K>>[2],
  ) => client.call(TaskDefinition, key, req, { timeoutMs: 5_000 });
  const create = (id: string, extra: Record<string, unknown> = {}) =>
    call('create', {
      id,
      bundle: `/run/bundles/${id}`,
      rootfs: [{ type: 'overlay', source: 'overlay', target: '', options: ['lowerdir=/l'] }],
      terminal: false,
      stdin: '',
      stdout: `/fifo/${id}-out`,
      stderr: `/fifo/${id}-err`,
      checkpoint: '',
      parentCheckpoint: '',
      options: undefined,
      ...extra,
    });
  return { backend, io, events, clock, service, client, call, create, shutdowns: () => shutdowns };
}

/** The rpc code and message a call was rejected with. */
async function rejection(p: Promise<unknown>): Promise<{ code: number | undefined; message: string }> {
  try {
    await p;
  } catch (err) {
    return { code: rpcCodeOf(err), message: (err as Error).message };
  }
  assert.fail('the call succeeded');
}

const spec = (process: unknown) => ({
  typeUrl: PROCESS_TYPE_URL,
  value: Buffer.from(JSON.stringify(process)),
});

describe('shim Task service (over fakes, through a ttrpc server)', () => {
  it('create → start → exit → wait, state, delete, shutdown; the events in order', async () => {
    const t = setup();
    assert.deepEqual(await t.create('c1'), { pid: PID });
    let st = await t.call('state', { id: 'c1', execId: '' });
    assert.equal(st.status, Status.CREATED);
    assert.equal(st.bundle, '/run/bundles/c1');
    assert.equal(st.stdout, '/fifo/c1-out');
    assert.deepEqual(await t.call('start', { id: 'c1', execId: '' }), { pid: PID });
    assert.equal((await t.call('state', { id: 'c1', execId: '' })).status, Status.RUNNING);
    const waited = t.call('wait', { id: 'c1', execId: '' });
    await t.call('shutdown', { id: 'c1', now: false });
    assert.equal(t.shutdowns(), 0, 'a daemon with a task does not shut down');
    t.backend.shims.get('c1')!.exit({ code: 3, signal: null });
    const w = await waited;
    assert.equal(w.exitStatus, 3);
    assert.ok(w.exitedAt);
    st = await t.call('state', { id: 'c1', execId: '' });
    assert.equal(st.status, Status.STOPPED);
    assert.equal(st.exitStatus, 3);
    const kill = await rejection(t.call('kill', { id: 'c1', execId: '', signal: 15, all: false }));
    assert.equal(kill.code, RpcCode.NotFound, 'containerd reads NotFound as "already finished"');
    const del = await t.call('delete', { id: 'c1', execId: '' });
    assert.equal(del.exitStatus, 3);
    assert.deepEqual(t.backend.removed, ['c1']);
    assert.deepEqual(t.io.closed, ['/fifo/c1-out'], 'the FIFOs are closed at the exit');
    await t.call('shutdown', { id: 'c1', now: false });
    assert.equal(t.shutdowns(), 1);
    assert.deepEqual(
      t.events.map((e) => e.topic),
      ['/tasks/create', '/tasks/start', '/tasks/exit', '/tasks/delete'],
    );
    const exit = t.events[2]!;
    assert.equal(exit.topic, '/tasks/exit');
    assert.deepEqual(
      { ...exit.event, exitedAt: undefined },
      {
        containerId: 'c1',
        id: 'c1',
        pid: PID,
        exitStatus: 3,
        exitedAt: undefined,
      },
    );
  });

  it('an unknown task or exec is NotFound; a request that is not valid is InvalidArgument naming the field', async () => {
    const t = setup();
    for (const p of [
      t.call('state', { id: 'nope', execId: '' }),
      t.call('wait', { id: 'nope', execId: '' }),
      t.call('delete', { id: 'nope', execId: '' }),
      t.call('kill', { id: 'nope', execId: '', signal: 9, all: false }),
      t.call('pids', { id: 'nope' }),
      t.call('connect', { id: 'nope' }),
    ])
      assert.equal((await rejection(p)).code, RpcCode.NotFound);
    await t.create('c1');
    assert.equal((await rejection(t.call('state', { id: 'c1', execId: 'e9' }))).code, RpcCode.NotFound);
    const cases: Array<[Promise<unknown>, RegExp]> = [
      [t.create('../x'), /CreateTaskRequest\.id must be a task id/],
      [t.create('c2', { bundle: 'relative' }), /CreateTaskRequest\.bundle must be an absolute path/],
      [t.create('c2', { stdout: 'fifo' }), /CreateTaskRequest\.stdout must be an absolute path/],
      [t.create('c2', { rootfs: [{ type: '', source: 'x', target: '', options: [] }] }), /rootfs\[0\]\.type/],
      [t.call('kill', { id: 'c1', execId: '', signal: 0, all: false }), /KillRequest\.signal must be/],
      [t.call('state', { id: 'c1', execId: 'a/b' }), /exec_id must be/],
    ];
    for (const [p, re] of cases) {
      const r = await rejection(p);
      assert.equal(r.code, RpcCode.InvalidArgument, r.message);
      assert.match(r.message, re);
    }
    const dup = await rejection(t.create('c1'));
    assert.equal(dup.code, RpcCode.AlreadyExists);
    const resize = await rejection(t.call('resizePty', { id: 'c1', execId: '', width: 80, height: 70000 }));
    assert.equal(resize.code, RpcCode.InvalidArgument);
    assert.match(resize.message, /ResizePtyRequest\.height must be from 1 to 65535/);
    const cp = await rejection(t.call('checkpoint', { id: 'c1', path: '/x', options: undefined }));
    assert.equal(cp.code, RpcCode.Unimplemented);
    const broken = await rejection(t.create('c4', { bundle: '/run/bundles/broken' }));
    assert.equal(broken.code, RpcCode.Internal);
    assert.equal(t.service.taskCount, 1, 'a failed create leaves no task');
    assert.equal((await t.call('state', { id: 'c1', execId: '' })).status, Status.CREATED, 'still serving');
  });

  it('exec: added, started (output to its FIFO, stdin relayed), waited, deleted; bad specs are refused', async () => {
    const t = setup();
    await t.create('c1');
    await t.call('start', { id: 'c1', execId: '' });
    const io = { terminal: false, stdin: '', stdout: '/fifo/e1-out', stderr: '' };
    await t.call('exec', {
      id: 'c1',
      execId: 'e1',
      ...io,
      spec: spec({ args: ['sh', '-c', 'x'], cwd: '/' }),
    });
    assert.equal((await t.call('state', { id: 'c1', execId: 'e1' })).status, Status.CREATED);
    await t.call('start', { id: 'c1', execId: 'e1' });
    const shim = t.backend.shims.get('c1')!;
    const e = shim.execs[0]!;
    assert.deepEqual(e.req.process.args, ['sh', '-c', 'x']);
    const waited = t.call('wait', { id: 'c1', execId: 'e1' });
    e.reply({ t: 'out', fd: 1, data: Buffer.from('in-exec\n').toString('base64') });
    e.reply({ t: 'exit', code: 6, signal: null });
    assert.equal((await waited).exitStatus, 6);
    assert.equal(t.io.outputs.get('/fifo/e1-out'), 'in-exec\n');
    assert.equal((await t.call('delete', { id: 'c1', execId: 'e1' })).exitStatus, 6);
    assert.equal((await rejection(t.call('state', { id: 'c1', execId: 'e1' }))).code, RpcCode.NotFound);
    const bad: Array<[unknown, number, RegExp]> = [
      [undefined, RpcCode.InvalidArgument, /ExecProcessRequest\.spec must be/],
      [{ typeUrl: 'x', value: Buffer.from('{}') }, RpcCode.InvalidArgument, /spec\.type_url/],
      [spec({ args: [], cwd: '/' }), RpcCode.InvalidArgument, /spec\.args/],
      [spec({ args: ['sh'], cwd: 'rel' }), RpcCode.InvalidArgument, /cwd/],
      [spec({ args: ['sh'], cwd: '/', terminal: 'yes' }), RpcCode.InvalidArgument, /terminal/],
    ];
    for (const [s, code, re] of bad) {
      const r = await rejection(
        t.call('exec', { id: 'c1', execId: 'e2', ...io, spec: s as ReturnType<typeof spec> }),
      );
      assert.equal(r.code, code, r.message);
      assert.match(r.message, re);
    }
    const events = t.events.map((ev) => ev.topic);
    assert.deepEqual(events.slice(2), ['/tasks/exec-added', '/tasks/exec-started', '/tasks/exit']);
  });

  it('an exec whose start fails (a program that is not there) has exited 127 and is deleted, the task runs on', async () => {
    const t = setup();
    await t.create('c1');
    await t.call('start', { id: 'c1', execId: '' });
    const io = { terminal: false, stdin: '', stdout: '/fifo/e1-out', stderr: '' };
    await t.call('exec', { id: 'c1', execId: 'e1', ...io, spec: spec({ args: ['nope'], cwd: '/' }) });
    const failed = await rejection(t.call('start', { id: 'c1', execId: 'e1' }));
    assert.match(failed.message, /executable file not found/);
    const st = await t.call('state', { id: 'c1', execId: 'e1' });
    assert.deepEqual([st.status, st.exitStatus], [Status.STOPPED, 127]);
    assert.ok(t.io.closed.includes('/fifo/e1-out'), "its FIFOs are closed: ctr's copy of them ends");
    const del = await t.call('delete', { id: 'c1', execId: 'e1' });
    assert.equal(del.exitStatus, 127);
    assert.equal((await rejection(t.call('state', { id: 'c1', execId: 'e1' }))).code, RpcCode.NotFound);
    assert.equal(
      (await t.call('state', { id: 'c1', execId: '' })).status,
      Status.RUNNING,
      'the task runs on',
    );
    // An exec never started is deleted as it is (ended as if killed).
    await t.call('exec', { id: 'c1', execId: 'e2', ...io, spec: spec({ args: ['true'], cwd: '/' }) });
    assert.equal((await t.call('delete', { id: 'c1', execId: 'e2' })).exitStatus, 137);
  });

  it("a task whose start fails is stopped (127), its container killed, and Delete goes through as after runc's failed create", async () => {
    const t = setup();
    await t.create('c1', { bundle: '/run/bundles/nope' });
    const waited = t.call('wait', { id: 'c1', execId: '' });
    const failed = await rejection(t.call('start', { id: 'c1', execId: '' }));
    assert.match(failed.message, /"nope": executable file not found/);
    assert.deepEqual(t.backend.shims.get('c1')!.signals, ['SIGKILL'], 'the container (its VM) is stopped');
    const st = await t.call('state', { id: 'c1', execId: '' });
    assert.deepEqual([st.status, st.exitStatus], [Status.STOPPED, 127]);
    assert.equal((await waited).exitStatus, 127);
    assert.equal((await t.call('delete', { id: 'c1', execId: '' })).exitStatus, 127);
    assert.deepEqual(t.backend.removed, ['c1']);
    assert.deepEqual(
      t.events.map((e) => e.topic),
      ['/tasks/create', '/tasks/exit', '/tasks/delete'],
    );
  });

  it('terminal: the task and the exec get a pty size that ResizePty sets; State says terminal', async () => {
    const t = setup();
    await t.create('c1', { terminal: true, stderr: '' });
    assert.equal((await t.call('state', { id: 'c1', execId: '' })).terminal, true);
    await t.call('start', { id: 'c1', execId: '' });
    const shim = t.backend.shims.get('c1')!;
    const port = shim.stdio?.terminal;
    assert.ok(port, "the container's stdio is a terminal");
    assert.deepEqual(port.size(), { rows: 24, cols: 80 }, 'until the first resize');
    const seen: unknown[] = [];
    port.onResize((s) => seen.push(s));
    await t.call('resizePty', { id: 'c1', execId: '', width: 101, height: 33 });
    await t.call('resizePty', { id: 'c1', execId: '', width: 0, height: 0 }); // no size: nothing changes
    assert.deepEqual(seen, [{ rows: 33, cols: 101 }]);
    const io = { terminal: true, stdin: '/fifo/e1-in', stdout: '/fifo/e1-out', stderr: '' };
    await t.call('exec', {
      id: 'c1',
      execId: 'e1',
      ...io,
      spec: spec({ args: ['sh'], cwd: '/', terminal: true }),
    });
    await t.call('resizePty', { id: 'c1', execId: 'e1', width: 90, height: 30 }); // before start
    await t.call('start', { id: 'c1', execId: 'e1' });
    assert.deepEqual(shim.execs[0]!.req.terminal, { rows: 30, cols: 90 }, 'the exec starts at the size set');
    await t.call('resizePty', { id: 'c1', execId: 'e1', width: 120, height: 40 });
    assert.deepEqual(shim.execs[0]!.resizes, [{ rows: 40, cols: 120 }]);
    assert.equal((await t.call('state', { id: 'c1', execId: 'e1' })).terminal, true);
    // Without a terminal, a resize changes nothing and is not an error (as in containerd's runc shim).
    await t.call('exec', {
      id: 'c1',
      execId: 'e2',
      ...io,
      terminal: false,
      spec: spec({ args: ['sh'], cwd: '/' }),
    });
    await t.call('start', { id: 'c1', execId: 'e2' });
    await t.call('resizePty', { id: 'c1', execId: 'e2', width: 120, height: 40 });
    assert.equal(shim.execs[1]!.req.terminal, undefined);
    assert.deepEqual(shim.execs[1]!.resizes, []);
  });

  it('kill --all signals the cgroup through the sandbox; pause/resume the sandbox, not a member', async () => {
    const t = setup();
    await t.create('sb');
    await t.call('start', { id: 'sb', execId: '' });
    await t.create('m-1');
    await t.call('start', { id: 'm-1', execId: '' });
    await t.call('kill', { id: 'm-1', execId: '', signal: 15, all: true });
    assert.deepEqual(t.backend.shims.get('sb')!.signalledAll, [['m-1', 'SIGTERM']]);
    const p = await rejection(t.call('pause', { id: 'm-1' }));
    assert.equal(p.code, RpcCode.Unimplemented);
    assert.match(p.message, /pause the sandbox/);
    await t.call('pause', { id: 'sb' });
    assert.equal((await t.call('state', { id: 'sb', execId: '' })).status, Status.PAUSED);
    await t.call('resume', { id: 'sb' });
    assert.equal((await t.call('state', { id: 'sb', execId: '' })).status, Status.RUNNING);
    assert.ok(t.events.some((e) => e.topic === '/tasks/paused'));
    assert.ok(t.events.some((e) => e.topic === '/tasks/resumed'));
    await t.call('kill', { id: 'sb', execId: '', signal: 9, all: false });
    assert.deepEqual(t.backend.shims.get('sb')!.signals, ['SIGKILL']);
    const running = await rejection(t.call('delete', { id: 'm-1', execId: '' }));
    assert.equal(running.code, RpcCode.FailedPrecondition, 'a running task is not deleted');
  });

  it("a VM gone under a stop under way is not a fault: the stop's own exit ends the task", async () => {
    const t = setup();
    await t.create('sb');
    await t.call('start', { id: 'sb', execId: '' });
    const waited = t.call('wait', { id: 'sb', execId: '' });
    const sb = t.backend.shims.get('sb')!;
    sb.status = 'stopped'; // its stop has begun: the VM is destroyed first, the exit recorded after
    t.backend.vmAlive = false;
    await t.clock.advance(3_000);
    await settle();
    assert.equal(
      (await t.call('state', { id: 'sb', execId: '' })).status,
      Status.RUNNING,
      'stopped only once the exit is recorded (containerd deletes a stopped task at once)',
    );
    assert.equal(t.events.filter((e) => e.topic === '/tasks/exit').length, 0, 'no exit yet');
    // A Delete that comes now waits for the exit under way instead of refusing the task as running.
    const deleted = t.call('delete', { id: 'sb', execId: '' });
    await settle();
    sb.exit({ code: 0, signal: null });
    assert.equal((await waited).exitStatus, 0, "the process's own status, not 137");
    assert.equal((await deleted).exitStatus, 0);
    assert.equal(await t.call('state', { id: 'sb', execId: '' }).catch(rpcCodeOf), RpcCode.NotFound);
  });

  it('a Delete whose stop under way does not end within the bound says so, and the task stays', async () => {
    const t = setup();
    await t.create('sb');
    await t.call('start', { id: 'sb', execId: '' });
    t.backend.shims.get('sb')!.status = 'stopped'; // its VM is being destroyed, and that takes long
    const deleted = rejection(t.call('delete', { id: 'sb', execId: '' }));
    await settle();
    await t.clock.advance(10_000);
    const del = await deleted;
    assert.equal(del.code, RpcCode.FailedPrecondition);
    assert.match(del.message, /task sb is still stopping after 10000 ms .*delete it again/);
    assert.equal((await t.call('state', { id: 'sb', execId: '' })).status, Status.RUNNING, 'still there');
  });

  it('Stats (cgroup v2 Metrics), Update (LinuxResources), Pids (guest pids) through the VM owner; OOM events', async () => {
    const t = setup();
    await t.create('sb');
    const sb = t.backend.shims.get('sb')!;
    const notYet = await rejection(t.call('stats', { id: 'sb' }));
    assert.equal(notYet.code, RpcCode.FailedPrecondition, notYet.message);
    await t.call('start', { id: 'sb', execId: '' });
    await t.create('m-1');
    await t.call('start', { id: 'm-1', execId: '' });
    sb.cgroups.set('sb', cgroupStats());
    sb.cgroups.set('m-1', cgroupStats(0, [12]));
    const r = await t.call('stats', { id: 'm-1' });
    assert.equal(r.stats?.typeUrl, METRICS_TYPE_URL);
    const m = Metrics.decode(r.stats!.value);
    assert.equal(m.memory?.usage, 5n << 20n);
    assert.equal(m.memory?.usageLimit, 2n ** 64n - 1n, 'no limit reads as the largest uint64');
    assert.equal(m.memory?.inactiveFile, 1n << 20n);
    assert.equal(m.memory?.kernelStack, 16384n);
    assert.equal(m.cpu?.usageUsec, 1500n);
    assert.deepEqual([m.pids?.current, m.pids?.limit], [1n, 100n]);
    const pids = await t.call('pids', { id: 'm-1' });
    assert.deepEqual(
      pids.processes.map((p) => p.pid),
      [12],
      "the member's guest pids, from its sandbox",
    );

    const resources = (v: unknown) => ({
      typeUrl: RESOURCES_TYPE_URL,
      value: Buffer.from(JSON.stringify(v)),
    });
    const upd = { memory: { limit: 256 << 20 }, cpu: { shares: 512, quota: 50000, period: 100000 } };
    await t.call('update', { id: 'm-1', resources: resources(upd), annotations: {} });
    assert.deepEqual(sb.updates, [['m-1', { memory: 256 << 20, cpuQuota: 50000, cpuPeriod: 100000 }]]);
    const bad = await rejection(
      t.call('update', { id: 'm-1', resources: resources({ memory: { limit: 5 } }), annotations: {} }),
    );
    assert.equal(bad.code, RpcCode.InvalidArgument);
    assert.match(bad.message, /UpdateTaskRequest\.resources: memory\.limit must be/);
    const none = await rejection(t.call('update', { id: 'm-1', resources: undefined, annotations: {} }));
    assert.equal(none.code, RpcCode.InvalidArgument);
    assert.equal(sb.updates.length, 1, 'a bad update changes nothing');

    // OOM: memory.events oom_kill going up is a /tasks/oom event for that container.
    await t.clock.advance(1_000);
    await settle();
    sb.cgroups.set('m-1', cgroupStats(1, [12]));
    await t.clock.advance(1_000);
    await settle();
    const ooms = t.events.filter((e) => e.topic === '/tasks/oom');
    assert.deepEqual(
      ooms.map((e) => e.event),
      [{ containerId: 'm-1' }],
    );
  });

  it('Wait is bounded by the VM: a dead VM ends the task (and its member) with 128+SIGKILL', async () => {
    const t = setup();
    await t.create('sb');
    await t.call('start', { id: 'sb', execId: '' });
    await t.create('m-1');
    await t.call('start', { id: 'm-1', execId: '' });
    const waits = [t.call('wait', { id: 'sb', execId: '' }), t.call('wait', { id: 'm-1', execId: '' })];
    await t.clock.advance(5_000);
    await settle();
    t.backend.vmAlive = false;
    await t.clock.advance(1_000);
    await settle();
    const [a, b] = await Promise.all(waits);
    assert.equal(a!.exitStatus, 137);
    assert.equal(b!.exitStatus, 137);
  });
});
