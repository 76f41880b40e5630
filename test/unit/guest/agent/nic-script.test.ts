import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { describe, it } from 'node:test';
import { nicScript } from '../../../../src/guest/agent/nic-script.js';

describe("the guest's NIC set-up script (one shell for all ip commands)", () => {
  const nic = {
    mac: '0a:58:c6:12:00:02',
    mtu: 1450,
    addresses: ['198.18.0.2/24', 'fd00::2/64'],
    routes: [{ dest: 'default', via: '198.18.0.1' }, { dest: '10.0.0.0/8' }],
  };

  it('sets the link up with its MTU, then adds each address and route, values only as positional parameters', () => {
    const { script, args } = nicScript('eth1', nic);
    assert.deepEqual(args, [
      'eth1',
      '1450',
      '198.18.0.2/24',
      'fd00::2/64',
      'default',
      '198.18.0.1',
      '10.0.0.0/8',
    ]);
    assert.equal(
      script,
      [
        'set -e',
        'ip link set dev "$1" mtu "$2" up',
        'ip addr add "${3}" dev "$1"',
        'ip addr add "${4}" dev "$1"',
        'ip route add "${5}" via "${6}" dev "$1"',
        'ip route add "${7}" dev "$1"',
      ].join('\n'),
    );
    for (const v of args) assert.ok(!script.includes(v) || v.length < 3, `value ${v} is in the script text`);
  });

  it('runs the commands with the values intact, even ones the shell would otherwise expand, and stops at the first failure', () => {
    // `ip` is a shell function that prints its arguments, one per line; the values reach it unexpanded.
    const { script, args } = nicScript('eth0', { ...nic, addresses: ['$(touch /tmp/x) `x` *'], routes: [] });
    const out = execFileSync('sh', ['-c', `ip() { printf '%s|' "$@"; echo; }\n${script}`, 'sh', ...args], {
      encoding: 'utf8',
    });
    assert.equal(out, 'link|set|dev|eth0|mtu|1450|up|\naddr|add|$(touch /tmp/x) `x` *|dev|eth0|\n');
    const failing = nicScript('eth0', nic);
    assert.throws(() =>
      execFileSync(
        'sh',
        ['-c', `ip() { echo "$@"; [ "$1" = link ]; }\n${failing.script}`, 'sh', ...failing.args],
        {
          stdio: 'pipe',
        },
      ),
    );
  });
});
