import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { spareTapName, tapName } from '../../../src/hypervisor/qemu/tap-names.js';
import type { CommandRunner } from '../../../src/platform/command.js';
import { UndoStack } from '../../../src/platform/undo-stack.js';
import { parseHostMessage } from '../../../src/protocol/agent/messages.js';
import {
  connectPodNetwork,
  disconnectPodNetwork,
  mirredBatch,
  podInterfaces,
  releaseUnusedSpareNic,
} from '../../../src/sandbox/network.js';
import type { Vm } from '../../../src/vm/vm.js';

/** `ip -j` output of a CNI-made pod namespace: loopback, eth0 with an address, a default route. */
const fakeIp: CommandRunner = async (_cmd, args) => {
  const out = args.includes('addr')
    ? [
        { ifname: 'lo', link_type: 'loopback', address: '00:00:00:00:00:00', mtu: 65536, addr_info: [] },
        {
          ifname: 'eth0',
          link_type: 'ether',
          address: '0A:58:C6:12:00:02',
          mtu: 1450,
          addr_info: [
            { family: 'inet', local: '198.18.0.2', prefixlen: 24, scope: 'global' },
            { family: 'inet6', local: 'fe80::858:c6ff:fe12:2', prefixlen: 64, scope: 'link' },
          ],
        },
      ]
    : [
        { dst: 'default', gateway: '198.18.0.1', dev: 'eth0' },
        { dst: '198.18.0.0/24', dev: 'eth0', protocol: 'kernel', scope: 'link' },
      ];
  return { stdout: Buffer.from(JSON.stringify(out)), stderr: '' };
};

describe('pod network plumbing (pure parts)', () => {
  it("reads the pod's interfaces: MAC (lowercased), MTU, global addresses, non-kernel routes; skips loopback", async () => {
    assert.deepEqual(await podInterfaces(fakeIp, '/var/run/netns/p'), [
      {
        name: 'eth0',
        nic: {
          mac: '0a:58:c6:12:00:02',
          mtu: 1450,
          addresses: ['198.18.0.2/24'],
          routes: [{ dest: 'default', via: '198.18.0.1' }],
        },
      },
    ]);
  });

  it('names taps within the 15-character limit, distinct per VM and interface', () => {
    const a = tapName('0123456789ab', 0);
    assert.ok(a.length <= 15, a);
    assert.notEqual(a, tapName('0123456789ab', 1));
    assert.notEqual(a, tapName('ba9876543210', 0));
  });

  it("validates the agent's net request", () => {
    const ok = {
      mac: '0a:58:c6:12:00:02',
      mtu: 1500,
      addresses: ['198.18.0.2/24'],
      routes: [{ dest: 'default', via: '198.18.0.1' }],
    };
    assert.equal(parseHostMessage({ t: 'req', id: 1, op: 'net', nic: ok }).ok, true);
    for (const [bad, re] of [
      [{ ...ok, mac: 'nope' }, /mac/],
      [{ ...ok, mtu: 10 }, /mtu/],
      [{ ...ok, addresses: ['198.18.0.2; reboot'] }, /addresses/],
      [{ ...ok, routes: [{ dest: 'default', via: '$(x)' }] }, /routes/],
      [{ ...ok, addresses: Array.from({ length: 33 }, (_, i) => `198.18.0.${i}/24`) }, /at most 32/],
      [{ ...ok, routes: Array.from({ length: 65 }, () => ({ dest: 'default' })) }, /at most 64/],
    ] as const) {
      const r = parseHostMessage({ t: 'req', id: 1, op: 'net', nic: bad });
      assert.equal(r.ok, false);
      assert.match((r as { error: string }).error, re);
    }
  });

  it('redirects both ways in one tc batch, on the tap (which takes it along when deleted)', () => {
    assert.equal(
      mirredBatch('eth0', 'vmt1'),
      [
        'qdisc add dev vmt1 ingress',
        'filter add dev eth0 parent ffff: protocol all u32 match u8 0 0 action mirred egress redirect dev vmt1',
        'filter add dev vmt1 parent ffff: protocol all u32 match u8 0 0 action mirred egress redirect dev eth0',
        '',
      ].join('\n'),
    );
  });

  it('undoes exactly what it made: nothing for a refused namespace, the tap and its own qdisc after a failure', async () => {
    const calls: string[] = [];
    let failFilter = true;
    const run: CommandRunner = async (cmd, args, opts) => {
      const line = [cmd, ...args].join(' ');
      calls.push(line);
      if (line.includes(' ip -j ')) return fakeIp(cmd, args, opts);
      if (failFilter && line.includes('tc -batch')) throw new Error('tc: no such device');
      return { stdout: Buffer.alloc(0), stderr: '' };
    };
    const vm = {
      id: '0123456789ab',
      qmp: { execute: async () => ({}) },
      agent: { requestTraced: async () => ({ result: { name: 'eth0' }, trace: null }) },
    } as unknown as Vm;
    // A namespace given by /proc path (the host's, say) is refused before anything is done or undone.
    const undo = new UndoStack();
    await assert.rejects(connectPodNetwork(vm, '/proc/1/ns/net', run, undo), /only named namespaces/);
    await undo.unwind();
    assert.deepEqual(calls, []);
    // A failure after the qdisc: the tap goes, and the qdisc this call added, on that interface only.
    await assert.rejects(connectPodNetwork(vm, '/var/run/netns/p', run, undo), /no such device/);
    calls.length = 0;
    await undo.unwind();
    const tap = tapName('0123456789ab', 0);
    assert.deepEqual(calls, [
      'nsenter --net=/var/run/netns/p tc qdisc del dev eth0 ingress',
      `ip link del dev ${tap}`,
    ]);
    // Stopping removes what was made, from its record, without listing the namespace's interfaces.
    failFilter = false;
    const made = await connectPodNetwork(vm, '/var/run/netns/p', run, new UndoStack());
    assert.deepEqual(made, { netns: '/var/run/netns/p', taps: [tap], ingress: ['eth0'] });
    calls.length = 0;
    await disconnectPodNetwork(made, run);
    assert.deepEqual(calls, [
      `nsenter --net=/var/run/netns/p ip link del dev ${tap}`,
      'nsenter --net=/var/run/netns/p tc qdisc del dev eth0 ingress',
    ]);
  });

  it("asks the guest for the NIC right after the hot-plug, while the host moves the tap and sets up tc; waits for its answer even when the host's part fails", async () => {
    const events: string[] = [];
    let failTc = false;
    let answer: (v: unknown) => void = () => {};
    const run: CommandRunner = async (cmd, args, opts) => {
      const line = [cmd, ...args].join(' ');
      if (line.includes(' ip -j ')) return fakeIp(cmd, args, opts);
      events.push(line.includes('tc -batch') ? 'tc batch' : line.includes('netns') ? 'move tap' : line);
      if (failTc && line.includes('tc -batch')) throw new Error('tc: no such device');
      return { stdout: Buffer.alloc(0), stderr: '' };
    };
    const vm = {
      id: '0123456789ab',
      qmp: { execute: async (cmd: string) => void events.push(cmd) },
      agent: {
        requestTraced: (req: { op: string }) => {
          events.push(`agent ${req.op}`);
          return new Promise((r) => {
            answer = r;
          });
        },
      },
    } as unknown as Vm;
    const done = connectPodNetwork(vm, '/var/run/netns/p', run, new UndoStack()).then(() => 'connected');
    await new Promise((r) => setTimeout(r, 20));
    // The host's part is over, and the call still waits for the guest.
    const i = events.indexOf('agent net');
    assert.equal(events[i - 1], 'device_add');
    assert.ok(events.indexOf('tc batch') > i, events.join(', '));
    assert.equal(
      await Promise.race([done, new Promise((r) => setTimeout(() => r('waiting'), 20))]),
      'waiting',
    );
    answer({ result: { name: 'eth0' }, trace: { op: 'net', sentMs: 0, receivedMs: 1, guest: null } });
    assert.equal(await done, 'connected');

    // tc fails: the error comes out only once the guest has answered (nothing left running behind the undo).
    failTc = true;
    events.length = 0;
    let settled = false;
    const failed = connectPodNetwork(vm, '/var/run/netns/p', run, new UndoStack()).finally(() => {
      settled = true;
    });
    failed.catch(() => {});
    await new Promise((r) => setTimeout(r, 20));
    assert.ok(events.includes('tc batch'));
    assert.equal(settled, false);
    answer({ result: { name: 'eth0' }, trace: { op: 'net', sentMs: 0, receivedMs: 1, guest: null } });
    await assert.rejects(failed, /no such device/);
  });

  it("the first interface takes the VM's spare NIC (no tap made, no hot-plug, the guest told it is the spare); a VM without a pod network has it released", async () => {
    const sysNet = mkdtempSync(join(tmpdir(), 'vmc-sysnet-'));
    try {
      const vmId = '0123456789ab';
      writeFileSync(join(sysNet, spareTapName(vmId)), '');
      const calls: string[] = [];
      const run: CommandRunner = async (cmd, args, opts) => {
        const line = [cmd, ...args].join(' ');
        if (line.includes(' ip -j ')) return fakeIp(cmd, args, opts);
        calls.push(line);
        return { stdout: Buffer.alloc(0), stderr: '' };
      };
      const requests: unknown[] = [];
      const vm = {
        id: vmId,
        qmp: {
          execute: async (cmd: string, a: unknown) => void calls.push(`qmp ${cmd} ${JSON.stringify(a)}`),
        },
        agent: {
          requestTraced: async (req: unknown) => {
            requests.push(req);
            return { result: { name: 'eth0' }, trace: null };
          },
        },
      } as unknown as Vm;
      const made = await connectPodNetwork(vm, '/var/run/netns/p', run, new UndoStack(), undefined, sysNet);
      assert.deepEqual(made.taps, [spareTapName(vmId)]);
      assert.equal(
        calls.filter((c) => c.includes('tuntap') || c.startsWith('qmp')).length,
        0,
        calls.join('\n'),
      );
      assert.equal(calls[0], `ip link set dev ${spareTapName(vmId)} netns p`);
      assert.deepEqual(requests, [
        {
          op: 'net',
          spare: true,
          nic: {
            mac: '0a:58:c6:12:00:02',
            mtu: 1450,
            addresses: ['198.18.0.2/24'],
            routes: [{ dest: 'default', via: '198.18.0.1' }],
          },
        },
      ]);
      calls.length = 0;
      await releaseUnusedSpareNic(vm, sysNet);
      assert.deepEqual(calls, ['qmp netdev_del {"id":"sparenet"}']);
      rmSync(join(sysNet, spareTapName(vmId)));
      calls.length = 0;
      await releaseUnusedSpareNic(vm, sysNet);
      assert.deepEqual(calls, [], 'nothing to release once it is gone');
    } finally {
      rmSync(sysNet, { recursive: true, force: true });
    }
  });
});
