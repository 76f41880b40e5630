import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isVmcError } from '../../../../src/errors.js';
import { AgentServer, type GuestOps } from '../../../../src/guest/agent/server.js';
import { AgentClient } from '../../../../src/protocol/agent/client.js';
import { encodeFrame } from '../../../../src/protocol/agent/framing.js';
import { duplexPair } from '../../../helpers/duplex-pair.js';

/** Guest operations that record calls instead of touching the host. */
function fakeOps() {
  const calls: string[] = [];
  /** Host connections seen, with the calls made before each (see GuestOps.connected). */
  const connections: number[] = [];
  let spareLeft = true;
  const ops: GuestOps = {
    connected: () => void connections.push(calls.length),
    reseed: async (hex) => void calls.push(`reseed ${hex}`),
    setTime: async (ns) => void calls.push(`settime ${ns}`),
    online: async () => ({ cpus: 1, memoryBlocks: 2 }),
    mountShared: async () => ({ path: '/run/vmcache/shared' }),
    syncShared: async () => void calls.push('sync'),
    // Stands in for the helper's `enter`: the "container" is a shell whose script decides what fd 3 reports.
    containerCommand: async (e) => {
      calls.push(`container ${e.container!.root}`);
      return { file: '/bin/sh', args: ['-c', e.args.join(' ')] };
    },
    warm: async (share) => void calls.push(`warm ${share}`),
    churn: async (passes) => void calls.push(`churn ${passes}`),
    signalCgroup: async (name, signal) => {
      calls.push(`signal-cgroup ${name} ${signal}`);
      return 2;
    },
    updateCgroup: async (name, limits) => {
      calls.push(`update-cgroup ${name} ${JSON.stringify(limits)}`);
      return name === 'c1';
    },
    cgroupStats: async (name) =>
      name === 'c1'
        ? {
            memory: { current: 1, max: null, peak: 2, stat: { anon: 3 }, events: { oom_kill: 0 } },
            cpu: { usage_usec: 5 },
            pids: { current: 1, max: 10 },
            procs: [7],
          }
        : null,
    waitForNic: async (mac) => {
      calls.push(`wait ${mac}`);
      return 'eth0';
    },
    spareNic: async () => {
      calls.push('spare');
      const name = spareLeft ? 'eth9' : null;
      spareLeft = false;
      return name;
    },
    configureNic: async (name, nic, setMac) =>
      void calls.push(`nic ${name} ${nic.mac}${setMac ? ' set-mac' : ''}`),
    info: async () => ({ kernel: 'fake' }),
    shutdown: async () => void calls.push('shutdown'),
  };
  return { ops, calls, connections };
}

/** An agent server (running on the host, exec'ing host processes) and a connected, handshaken client. */
async function pair(server = new AgentServer(fakeOps().ops)) {
  const [hostSide, guestSide] = duplexPair();
  void server.serve(guestSide);
  const client = new AgentClient(hostSide, { requestTimeoutMs: 5_000 });
  const session = await client.handshake(2_000, 20);
  return { server, client, session, guestSide, hostSide };
}

describe('AgentServer (the in-guest agent engine, run on the host)', () => {
  it('tells the guest operations of each host connection before the hand-off requests arrive', async () => {
    const { ops, calls, connections } = fakeOps();
    const server = new AgentServer(ops);
    const first = await pair(server);
    assert.deepEqual(connections, [0], 'at the connection, before any request');
    await first.client.request({ op: 'reseed', data: 'ab' });
    first.client.close();
    const second = await pair(server);
    assert.deepEqual(connections, [0, 1], 'once per connection');
    assert.deepEqual(calls, ['reseed ab']);
    second.client.close();
  });

  it('answers the handshake with a session', async () => {
    const { client, session } = await pair();
    assert.equal(session.session, 1);
    assert.deepEqual(await client.request({ op: 'ping' }), { pong: true });
    client.close();
  });

  it('runs a process with env, cwd, stdin, separate stdout/stderr and its exit status', async () => {
    const { client } = await pair();
    const p = await client.exec({
      args: ['/bin/sh', '-c', 'echo "$GREETING $(pwd)"; cat; echo oops >&2; exit 3'],
      env: ['GREETING=hi', 'PATH=/usr/bin:/bin'],
      cwd: '/tmp',
      stdin: true,
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    p.stdout.on('data', (c: Buffer) => out.push(c));
    p.stderr.on('data', (c: Buffer) => err.push(c));
    await p.write('from-stdin\n');
    await p.end();
    assert.deepEqual(await p.wait(), { code: 3, signal: null });
    assert.equal(Buffer.concat(out).toString(), 'hi /tmp\nfrom-stdin\n');
    assert.equal(Buffer.concat(err).toString(), 'oops\n');
    client.close();
  });

  it('delivers signals to a process and reports them', async () => {
    const { client } = await pair();
    const p = await client.exec({ args: ['/bin/sleep', '30'] });
    await p.kill('TERM');
    assert.deepEqual(await p.wait(), { code: null, signal: 'SIGTERM' });
    await assert.rejects(
      client.request({ op: 'signal', proc: p.proc, signal: 'SIGNOPE' }),
      /no running process|unknown signal/,
    );
    client.close();
  });

  it('runs several processes at once', async () => {
    const { client } = await pair();
    const procs = await Promise.all(
      [1, 2, 3].map((n) => client.exec({ args: ['/bin/sh', '-c', `sleep 0.${n}; exit ${n}`] })),
    );
    const codes = await Promise.all(procs.map((p) => p.wait()));
    assert.deepEqual(
      codes.map((c) => c.code),
      [1, 2, 3],
    );
    client.close();
  });

  it('reports a missing program as a request error, not a crash', async () => {
    const { client } = await pair();
    await assert.rejects(
      client.exec({ args: ['/does/not/exist'] }),
      (e) => isVmcError(e, 'VMC_ERR_AGENT_REQUEST') && /ENOENT/.test(e.message),
    );
    assert.deepEqual(await client.request({ op: 'ping' }), { pong: true });
    client.close();
  });

  it('passes a churn request to the guest ops and answers it', async () => {
    const { ops, calls } = fakeOps();
    const { client } = await pair(new AgentServer(ops));
    assert.equal(await client.request({ op: 'churn', passes: 7 }), null);
    assert.deepEqual(calls, ['churn 7']);
    client.close();
  });

  it('starts a container process only once its status pipe closes empty, and output follows the reply', async () => {
    const { ops, calls } = fakeOps();
    const { client } = await pair(new AgentServer(ops));
    const p = await client.exec({
      args: ['exec 3>&-; echo inside; exit 4'],
      container: { root: 'c1/rootfs' },
    });
    const out: Buffer[] = [];
    p.stdout.on('data', (c: Buffer) => out.push(c));
    assert.deepEqual(await p.wait(), { code: 4, signal: null });
    assert.equal(Buffer.concat(out).toString(), 'inside\n');
    assert.deepEqual(calls, ['container c1/rootfs', 'sync']);
    client.close();
  });

  it("reports a container's exit only once the share is synced; a plain process's without a sync", async () => {
    const { ops, calls } = fakeOps();
    let release!: () => void;
    const synced = new Promise<void>((r) => {
      release = r;
    });
    ops.syncShared = async () => {
      calls.push('sync');
      await synced;
    };
    const { client } = await pair(new AgentServer(ops));
    const p = await client.exec({ args: ['exec 3>&-; exit 0'], container: { root: 'c1/rootfs' } });
    let exited = false;
    const waited = p.wait().then((st) => {
      exited = true;
      return st;
    });
    for (let i = 0; i < 50 && !calls.includes('sync'); i++) await new Promise((r) => setTimeout(r, 10));
    assert.ok(calls.includes('sync'), 'the agent syncs the share when the container process exits');
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(exited, false, 'no exit before the sync has finished');
    release();
    assert.deepEqual(await waited, { code: 0, signal: null });
    const plain = await client.exec({ args: ['/bin/true'] });
    await plain.wait();
    assert.equal(calls.filter((c) => c === 'sync').length, 1, 'a non-container process does not sync');
    client.close();
  });

  it('fails the exec with what the helper wrote to its status pipe (setup or exec failure)', async () => {
    const { ops } = fakeOps();
    const { client, server } = await pair(new AgentServer(ops));
    await assert.rejects(
      client.exec({
        args: ['printf \'exec: "nope": executable file not found in $PATH\' >&3; exit 127'],
        container: { root: 'c1/rootfs' },
      }),
      (e) => isVmcError(e, 'VMC_ERR_AGENT_REQUEST') && /executable file not found/.test(e.message),
    );
    assert.equal(server.running, 0);
    client.close();
  });

  it('survives malformed frames: answers those with an id, drops the rest, keeps serving', async () => {
    const { client, hostSide } = await pair();
    hostSide.write(Buffer.from('random garbage'));
    hostSide.write(Buffer.concat([Buffer.from('VMC1'), Buffer.from([0, 0, 0, 2]), Buffer.from('{x')]));
    hostSide.write(encodeFrame({ t: 'req', id: 999, op: 'exec', exec: { args: [] } }));
    hostSide.write(encodeFrame(['not', 'an', 'object']));
    assert.deepEqual(await client.request({ op: 'ping' }), { pong: true });
    client.close();
  });

  it('reports its own times: when it saw the connection and the hello, and when each request came and went', async () => {
    // A guest clock that ticks 10 µs per read: every reading is distinct, so the order is checked exactly.
    let t = 1_000;
    const nowUs = () => (t += 10);
    const { ops, calls } = fakeOps();
    const server = new AgentServer(ops, { nowUs });
    const [hostSide, guestSide] = duplexPair();
    void server.serve(guestSide, 500);
    const client = new AgentClient(hostSide, { requestTimeoutMs: 5_000 });
    const session = await client.handshake(2_000, 20);
    const g = session.trace.guest!;
    assert.equal(g.conn, 500);
    assert.ok(g.conn <= g.rx && g.rx < g.tx, JSON.stringify(g));
    assert.ok(session.trace.hellos >= 1);
    assert.ok(session.trace.startedMs <= session.trace.answeredMs);

    const ping = await client.requestTraced({ op: 'ping' });
    assert.deepEqual(ping.result, { pong: true });
    assert.equal(ping.trace.op, 'ping');
    assert.ok(ping.trace.guest!.rx > g.tx && ping.trace.guest!.tx > ping.trace.guest!.rx);
    assert.ok(ping.trace.sentMs <= ping.trace.receivedMs);

    // A plain process reports its fork + exec; a container's also the share and the helper's set-up.
    const plain = await client.exec({ args: ['/bin/true'] });
    assert.deepEqual(Object.keys(plain.startTrace!.guest!).sort(), ['rx', 'spawn', 'tx']);
    await plain.wait();
    const c = await client.exec({ args: ['exec 3>&-; exit 0'], container: { root: 'c1/rootfs' } });
    const cg = c.startTrace!.guest!;
    assert.deepEqual(Object.keys(cg).sort(), ['enter', 'rx', 'share', 'spawn', 'tx']);
    assert.ok(cg.share! + cg.spawn! + cg.enter! <= cg.tx - cg.rx);
    await c.wait();

    // A net request reports its wait for the NIC and the NIC's set-up, in that order, within its handling.
    const nic = { mac: '0a:58:c6:12:00:02', mtu: 1500, addresses: ['198.18.0.2/24'], routes: [] };
    const net = await client.requestTraced({ op: 'net', nic });
    assert.deepEqual(net.result, { name: 'eth0' });
    const ng = net.trace.guest!;
    assert.deepEqual(Object.keys(ng).sort(), ['nicConfig', 'nicWait', 'rx', 'tx']);
    assert.ok(ng.nicWait! > 0 && ng.nicConfig! > 0 && ng.nicWait! + ng.nicConfig! <= ng.tx - ng.rx);

    // The spare NIC: no wait for a MAC to appear, and the NIC gets the pod's MAC; a second one has none left.
    const sp = await client.requestTraced({ op: 'net', nic, spare: true });
    assert.deepEqual(sp.result, { name: 'eth9' });
    assert.deepEqual(calls.slice(-2), ['spare', 'nic eth9 0a:58:c6:12:00:02 set-mac']);
    const none = await client.request({ op: 'net', nic, spare: true }).catch((e) => e);
    assert.ok(isVmcError(none, 'VMC_ERR_AGENT_REQUEST'));
    assert.match(none.message, /no spare NIC left/);
    assert.deepEqual(calls.slice(-1), ['spare'], 'nothing configured without a NIC');

    // A refused request carries them too.
    const refused = await client.request({ op: 'signal', proc: 12345, signal: 'TERM' }).catch((e) => e);
    assert.ok(isVmcError(refused, 'VMC_ERR_AGENT_REQUEST'));
    client.close();
  });

  it('passes privileged operations to the guest ops', async () => {
    const { ops, calls } = fakeOps();
    const { client } = await pair(new AgentServer(ops));
    await client.request({ op: 'reseed', data: 'abcd' });
    await client.request({ op: 'set-time', epochNs: '1700000000000000000' });
    assert.deepEqual(await client.request({ op: 'online', cpus: 2, memory: true }), {
      cpus: 1,
      memoryBlocks: 2,
    });
    assert.deepEqual(await client.request({ op: 'signal-cgroup', name: 'c1', signal: 'term' }), {
      signalled: 2,
    });
    await assert.rejects(
      client.request({ op: 'signal-cgroup', name: 'c1', signal: 'NOPE' }),
      /unknown signal/,
    );
    assert.deepEqual(calls, ['reseed abcd', 'settime 1700000000000000000', 'signal-cgroup c1 SIGTERM']);
    client.close();
  });

  it('updates and reads a container cgroup, and names one that does not exist', async () => {
    const { ops, calls } = fakeOps();
    const { client } = await pair(new AgentServer(ops));
    assert.equal(
      await client.request({ op: 'update-cgroup', name: 'c1', limits: { 'pids.max': '10' } }),
      null,
    );
    await assert.rejects(
      client.request({ op: 'update-cgroup', name: 'c2', limits: { 'pids.max': '10' } }),
      (e) => isVmcError(e, 'VMC_ERR_AGENT_REQUEST') && /no container cgroup c2/.test(e.message),
    );
    await assert.rejects(
      client.request({ op: 'update-cgroup', name: 'c1', limits: { 'cgroup.procs': '1' } }),
      /cgroup.procs.*is not one of memory.max/,
    );
    const stats = (await client.request({ op: 'cgroup-stats', name: 'c1' })) as { pids: { max: number } };
    assert.equal(stats.pids.max, 10);
    await assert.rejects(client.request({ op: 'cgroup-stats', name: 'c2' }), /no container cgroup c2/);
    assert.deepEqual(calls, ['update-cgroup c1 {"pids.max":"10"}', 'update-cgroup c2 {"pids.max":"10"}']);
    client.close();
  });

  it('serves a new owner on a new connection with a new session; processes outlive the old owner', async () => {
    const server = new AgentServer(fakeOps().ops);
    const first = await pair(server);
    const p = await first.client.exec({ args: ['/bin/sleep', '5'] });
    first.client.close();
    const second = await pair(server);
    assert.equal(second.session.session, 2);
    assert.equal(server.running, 1);
    await second.client.request({ op: 'signal', proc: p.proc, signal: 'SIGKILL' });
    second.client.close();
  });

  it('starts a new session when a new owner greets on the same stream (no EOF seen by the guest)', async () => {
    const { client, hostSide, server } = await pair();
    client.close();
    // A second client on the *same* byte stream, as when virtio-serial merges a disconnect and a reconnect.
    const [h2, g2] = duplexPair();
    void server.serve(g2);
    const c2 = new AgentClient(h2);
    const s2 = await c2.handshake(2_000, 20);
    assert.equal(s2.session, 2);
    assert.ok(hostSide.destroyed);
    c2.close();
  });

  it('client ignores stale frames until its own hello is answered', async () => {
    const [hostSide, guestSide] = duplexPair();
    const client = new AgentClient(hostSide);
    const hs = client.handshake(2_000, 20);
    // Stale output meant for a previous owner, then a hello-ok for someone else's nonce.
    guestSide.write(encodeFrame({ t: 'res', id: 1, ok: true, result: 'stale' }));
    guestSide.write(
      encodeFrame({ t: 'hello-ok', nonce: 'someone-else', version: 1, session: 7, agentPid: 1 }),
    );
    const server = new AgentServer(fakeOps().ops);
    void server.serve(guestSide);
    const s = await hs;
    assert.equal(s.session, 1);
    client.close();
  });

  it('times out a handshake nobody answers', async () => {
    const [hostSide] = duplexPair();
    const client = new AgentClient(hostSide);
    await assert.rejects(client.handshake(50, 10), (e) => isVmcError(e, 'VMC_ERR_AGENT_TIMEOUT'));
    client.close();
  });
});
