import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { nicHelperArg } from '../../src/guest/agent/nic-line.js';
import { REPO, run } from '../helpers/cli.js';

// The guest helper's `net` command against the host's own kernel: the same rtnetlink requests the guest
// kernel gets, in a network namespace of its own, so the results can be read back with `ip -j`.
describe('vmc-helper net (rtnetlink) in a network namespace of its own', () => {
  const ns = `vmchelper${process.pid}`;
  const dir = mkdtempSync(join(tmpdir(), 'vmc-helper-'));
  const helper = join(dir, 'vmc-helper');
  const sh = (cmd: string, input?: string) => run('sh', ['-c', cmd], process.env, input, 20_000);
  const ipj = async (args: string) => JSON.parse((await sh(`ip -n ${ns} -j ${args}`)).stdout);
  const serve = async (lines: string[]) => {
    const r = await sh(`ip netns exec ${ns} ${helper} serve`, `${lines.join('\n')}\n`);
    assert.equal(r.code, 0, r.stderr);
    return r.stdout.trim().split('\n');
  };

  before(async () => {
    const c = await run(
      'gcc',
      ['-static', '-Os', '-o', helper, join(REPO, 'src/guest/files/vmc-helper.c')],
      process.env,
    );
    assert.equal(c.code, 0, c.stderr);
    const s = await sh(
      `ip netns add ${ns} && ip -n ${ns} link add n0 type veth peer name n1 && ip -n ${ns} link set n1 up`,
    );
    assert.equal(s.code, 0, s.stderr);
  });
  after(async () => {
    await sh(`ip netns del ${ns}`);
    rmSync(dir, { recursive: true, force: true });
  });

  it('sets MTU and link up, adds IPv4 and IPv6 addresses and routes (default via a gateway, on-link, IPv6 via)', async () => {
    const arg = nicHelperArg('n0', {
      mac: '0a:58:c6:12:00:02',
      mtu: 1400,
      addresses: ['198.18.7.2/24', 'fd00::2/64'],
      routes: [
        { dest: 'default', via: '198.18.7.1' },
        { dest: '10.9.0.0/16' },
        { dest: 'fd01::/64', via: 'fd00::1' },
      ],
    });
    assert.deepEqual(await serve([`net ${arg}`]), ['ok']);
    const [link] = await ipj('link show n0');
    assert.equal(link.mtu, 1400);
    assert.ok(link.flags.includes('UP'), `flags ${link.flags}`);
    const [addr] = await ipj('addr show n0');
    const locals = addr.addr_info.map(
      (a: { local: string; prefixlen: number }) => `${a.local}/${a.prefixlen}`,
    );
    assert.ok(locals.includes('198.18.7.2/24') && locals.includes('fd00::2/64'), locals.join(' '));
    const v4 = (await ipj('route show dev n0')) as Array<{ dst: string; gateway?: string; scope?: string }>;
    assert.deepEqual(
      v4.find((r) => r.dst === 'default'),
      { dst: 'default', gateway: '198.18.7.1', flags: [] },
    );
    assert.equal(
      v4.find((r) => r.dst === '10.9.0.0/16')?.scope,
      'link',
      'a route without a gateway is on-link',
    );
    const v6 = (await ipj('-6 route show dev n0')) as Array<{ dst: string; gateway?: string }>;
    assert.equal(v6.find((r) => r.dst === 'fd01::/64')?.gateway, 'fd00::1');
  });

  it('sets the MAC with the link (before it comes up), and sets the link down again', async () => {
    const arg = nicHelperArg('n0', { mac: '0a:58:c6:12:00:77', mtu: 1500, addresses: [], routes: [] }, true);
    assert.equal(arg, 'n0 1500 m=0a:58:c6:12:00:77');
    assert.deepEqual(await serve(['down n0', `net ${arg}`]), ['ok', 'ok']);
    let [link] = await ipj('link show n0');
    assert.equal(link.address, '0a:58:c6:12:00:77');
    assert.equal(link.mtu, 1500);
    assert.ok(link.flags.includes('UP'));
    assert.deepEqual(await serve(['down n0', 'down nope']), ['ok', 'err down: no NIC nope: No such device']);
    [link] = await ipj('link show n0');
    assert.ok(!link.flags.includes('UP'), `flags ${link.flags}`);
    assert.deepEqual(await serve(['net n0 1500 m=0a:58:zz:12:00:77']), [
      'err net: bad MAC 0a:58:zz:12:00:77',
    ]);
    [link] = await ipj('link show n0');
    assert.equal(link.address, '0a:58:c6:12:00:77', 'a bad MAC changes nothing');
  });

  it('answers each bad or failing line with an error naming the step, and goes on serving', async () => {
    assert.deepEqual(
      await serve([
        'net n0 1400 a=198.18.7.2/24', // already there
        'net nope 1400',
        'net n0 99999',
        'net n0 1400 r=default,fd00::1x',
        'net n0 1400 a=198.18.8.2',
        'net n0 1400 r=10.10.0.0/16', // a good line after the bad ones
      ]),
      [
        'err net: address 198.18.7.2/24 on n0: File exists',
        'err net: no NIC nope: No such device',
        'err net: bad MTU 99999',
        'err net: route default,fd00::1x on n0: not understood',
        'err net: address 198.18.8.2 on n0: not understood',
        'ok',
      ],
    );
    const [addr] = await ipj('addr show n0');
    assert.equal(
      addr.addr_info.filter((a: { local: string }) => a.local.startsWith('198.18.8')).length,
      0,
      'a refused address is not added',
    );
  });
});
