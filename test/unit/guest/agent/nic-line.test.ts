import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { nicHelperArg } from '../../../../src/guest/agent/nic-line.js';
import type { NicConfig } from '../../../../src/protocol/agent/messages.js';

describe("the helper's net line (one rtnetlink round of MTU, link up, addresses, routes)", () => {
  const nic = {
    mac: '0a:58:c6:12:00:02',
    mtu: 1450,
    addresses: ['198.18.0.2/24', 'fd00::2/64'],
    routes: [{ dest: 'default', via: '198.18.0.1' }, { dest: '10.0.0.0/8' }],
  };

  it('names the NIC and its MTU, then each address and route in order', () => {
    assert.equal(
      nicHelperArg('eth1', nic),
      'eth1 1450 a=198.18.0.2/24 a=fd00::2/64 r=default,198.18.0.1 r=10.0.0.0/8',
    );
    assert.equal(nicHelperArg('eth0', { ...nic, addresses: [], routes: [] }), 'eth0 1450');
  });

  it("refuses a value that would break the line's words (a blank, a comma, nothing)", () => {
    for (const [name, n] of [
      ['eth 0', nic],
      ['', nic],
      ['eth0', { ...nic, addresses: ['198.18.0.2/24 a=1.2.3.4/32'] }],
      ['eth0', { ...nic, routes: [{ dest: '10.0.0.0/8,1.2.3.4' }] }],
      ['eth0', { ...nic, routes: [{ dest: 'default', via: '1.2.3.4\nreboot' }] }],
    ] as Array<[string, NicConfig]>)
      assert.throws(() => nicHelperArg(name, n), /net: value .* empty or holds a blank or a comma/);
  });
});
