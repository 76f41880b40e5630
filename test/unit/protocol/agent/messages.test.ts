import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseGuestMessage, parseHostMessage } from '../../../../src/protocol/agent/messages.js';

describe('agent message validation', () => {
  it('accepts well-formed host messages', () => {
    assert.ok(parseHostMessage({ t: 'hello', nonce: 'n1', version: 1 }).ok);
    assert.ok(parseHostMessage({ t: 'req', id: 1, op: 'ping' }).ok);
    const e = parseHostMessage({
      t: 'req',
      id: 2,
      op: 'exec',
      exec: { args: ['/bin/true'], env: ['A=1'], uid: 0, stdin: true },
    });
    assert.ok(e.ok);
    assert.deepEqual(parseHostMessage({ t: 'req', id: 3, op: 'churn', passes: 200 }), {
      ok: true,
      msg: { t: 'req', id: 3, op: 'churn', passes: 200 },
    });
  });

  const cases: Array<[string, unknown, RegExp]> = [
    ['non-object', 42, /not an object/],
    ['unknown type', { t: 'nope' }, /unknown frame type/],
    ['empty nonce', { t: 'hello', nonce: '', version: 1 }, /nonce/],
    ['negative id', { t: 'req', id: -1, op: 'ping' }, /req.id/],
    ['unknown op', { t: 'req', id: 1, op: 'format-disk' }, /unknown op/],
    ['empty args', { t: 'req', id: 1, op: 'exec', exec: { args: [] } }, /exec.args/],
    ['env not strings', { t: 'req', id: 1, op: 'exec', exec: { args: ['x'], env: [1] } }, /exec.env/],
    ['uid negative', { t: 'req', id: 1, op: 'exec', exec: { args: ['x'], uid: -5 } }, /exec.uid/],
    [
      'churn of no pass',
      { t: 'req', id: 1, op: 'churn', passes: 0 },
      /churn.passes must be an integer from 1 to 200/,
    ],
    ['churn of too many passes', { t: 'req', id: 1, op: 'churn', passes: 201 }, /churn.passes/],
    ['churn of a fraction', { t: 'req', id: 1, op: 'churn', passes: 1.5 }, /churn.passes/],
    ['reseed not hex', { t: 'req', id: 1, op: 'reseed', data: 'zz' }, /reseed.data/],
    ['reseed too long', { t: 'req', id: 1, op: 'reseed', data: 'ab'.repeat(513) }, /reseed.data/],
    ['time not decimal', { t: 'req', id: 1, op: 'set-time', epochNs: '1e9' }, /epochNs/],
    ['signal missing', { t: 'req', id: 1, op: 'signal', proc: 1 }, /signal/],
    [
      'a cgroup name that is a path',
      { t: 'req', id: 1, op: 'signal-cgroup', name: '../../init.scope', signal: 'KILL' },
      /signal-cgroup needs name/,
    ],
    [
      'a cgroup signal without a signal',
      { t: 'req', id: 1, op: 'signal-cgroup', name: 'c1' },
      /signal-cgroup/,
    ],
    [
      'a container root that climbs out of the share',
      { t: 'req', id: 1, op: 'exec', exec: { args: ['x'], container: { root: 'c1/../../etc' } } },
      /exec.container.root/,
    ],
    [
      'an absolute container root',
      { t: 'req', id: 1, op: 'exec', exec: { args: ['x'], container: { root: '/etc' } } },
      /exec.container.root/,
    ],
    [
      'a container mount of an unsupported type',
      {
        t: 'req',
        id: 1,
        op: 'exec',
        exec: {
          args: ['x'],
          container: {
            root: 'c1/rootfs',
            mounts: [{ type: 'ext4', source: 'x', target: '/x', flags: 0, data: '' }],
          },
        },
      },
      /exec.container.mounts\[0\].type/,
    ],
    [
      'a bind mount from outside the share',
      {
        t: 'req',
        id: 1,
        op: 'exec',
        exec: {
          args: ['x'],
          container: {
            root: 'c1/rootfs',
            mounts: [{ type: 'bind', source: '/etc', target: '/x', flags: 0, data: '' }],
          },
        },
      },
      /exec.container.mounts\[0\].source/,
    ],
    [
      'a mount data string holding the helper separator',
      {
        t: 'req',
        id: 1,
        op: 'exec',
        exec: {
          args: ['x'],
          container: {
            root: 'c1/rootfs',
            mounts: [{ type: 'tmpfs', source: 'tmpfs', target: '/x', flags: 0, data: 'a\x1fb' }],
          },
        },
      },
      /exec.container.mounts\[0\].data/,
    ],
    [
      'a terminal for a process that is not a container',
      { t: 'req', id: 1, op: 'exec', exec: { args: ['sh'], terminal: { rows: 24, cols: 80 } } },
      /exec.terminal needs exec.container/,
    ],
    [
      'a terminal of 0 rows',
      { t: 'req', id: 1, op: 'exec', exec: { args: ['sh'], terminal: { rows: 0, cols: 80 } } },
      /exec.terminal.rows must be an integer from 1 to 65535/,
    ],
    [
      'a resize of 70000 columns',
      { t: 'req', id: 1, op: 'resize', proc: 2, rows: 24, cols: 70_000 },
      /resize.cols must be an integer from 1 to 65535/,
    ],
    ['a resize without proc', { t: 'req', id: 1, op: 'resize', rows: 24, cols: 80 }, /resize needs proc/],
    [
      'online with a boolean cpu count',
      { t: 'req', id: 1, op: 'online', cpus: true, memory: false },
      /online needs cpus/,
    ],
  ];
  for (const [name, msg, re] of cases) {
    it(`rejects ${name}, naming the field`, () => {
      const r = parseHostMessage(msg);
      assert.equal(r.ok, false);
      assert.match((r as { error: string }).error, re);
    });
  }

  it('accepts a resize and a container exec with a terminal', () => {
    const resize = { t: 'req', id: 3, op: 'resize', proc: 2, rows: 40, cols: 120 };
    assert.deepEqual(parseHostMessage(resize), { ok: true, msg: resize });
    const r = parseHostMessage({
      t: 'req',
      id: 4,
      op: 'exec',
      exec: { args: ['sh'], container: { root: 'c1/rootfs' }, terminal: { rows: 24, cols: 80 } },
    });
    assert.ok(r.ok, JSON.stringify(r));
  });

  it('keeps the request id of an invalid request so it can be answered', () => {
    const r = parseHostMessage({ t: 'req', id: 9, op: 'exec', exec: {} });
    assert.equal(r.ok, false);
    assert.equal((r as { id?: number }).id, 9);
  });

  it('validates guest messages', () => {
    assert.ok(parseGuestMessage({ t: 'exit', proc: 1, code: 0, signal: null }).ok);
    assert.ok(parseGuestMessage({ t: 'res', id: 1, ok: false, error: { code: 'X', message: 'y' } }).ok);
    assert.equal(parseGuestMessage({ t: 'out', proc: 1, fd: 3, data: '' }).ok, false);
    assert.equal(parseGuestMessage({ t: 'res', id: 1, ok: false }).ok, false);
  });

  it("accepts the guest's times in hello-ok and res, and frames without them", () => {
    const hello = { t: 'hello-ok', nonce: 'n', version: 1, session: 1, agentPid: 7 };
    assert.ok(parseGuestMessage(hello).ok);
    assert.ok(parseGuestMessage({ ...hello, gt: { conn: 5, rx: 5, tx: 9 } }).ok);
    const res = { t: 'res', id: 1, ok: true, result: null };
    assert.ok(parseGuestMessage(res).ok);
    assert.ok(parseGuestMessage({ ...res, gt: { rx: 10, tx: 10 } }).ok);
    const exec = { ...res, gt: { rx: 10, tx: 110, share: 20, spawn: 30, enter: 50 } };
    assert.deepEqual(parseGuestMessage(exec), { ok: true, msg: exec });
    const failed = { t: 'res', id: 2, ok: false, error: { code: 'X', message: 'y' }, gt: { rx: 1, tx: 2 } };
    assert.ok(parseGuestMessage(failed).ok);
  });

  const badTimes: Array<[string, Record<string, unknown>, RegExp]> = [
    ['hello-ok times not an object', { conn: 1, rx: 2, tx: 3, gt: 'soon' }, /hello-ok\.gt must be/],
    ['hello-ok rx before the connection', { gt: { conn: 5, rx: 4, tx: 6 } }, /conn 5, rx 4, tx 6/],
    ['hello-ok answered before read', { gt: { conn: 1, rx: 4, tx: 3 } }, /conn ≤ rx ≤ tx/],
    ['hello-ok a fractional time', { gt: { conn: 1.5, rx: 2, tx: 3 } }, /non-negative integers/],
    ['hello-ok an unknown time', { gt: { conn: 1, rx: 2, tx: 3, boot: 0 } }, /unknown field "boot"/],
  ];
  for (const [name, extra, re] of badTimes) {
    it(`rejects ${name} with a message naming the field`, () => {
      const r = parseGuestMessage({
        t: 'hello-ok',
        nonce: 'n',
        version: 1,
        session: 1,
        agentPid: 7,
        ...extra,
      });
      assert.equal(r.ok, false);
      assert.match((r as { error: string }).error, re);
    });
  }

  const badReplyTimes: Array<[string, unknown, RegExp]> = [
    [
      'missing tx',
      { rx: 1 },
      /res\.gt must be \{rx, tx, share\?, spawn\?, enter\?, nicWait\?, nicConfig\?\}.*tx undefined/,
    ],
    ['negative rx', { rx: -1, tx: 3 }, /rx -1/],
    ['rx after tx', { rx: 9, tx: 3 }, /rx 9 is after tx 3/],
    ['a step that is not a number', { rx: 1, tx: 9, spawn: '2' }, /spawn "2"/],
    [
      'steps longer than the request',
      { rx: 0, tx: 10, spawn: 6, enter: 5 },
      /steps \(11 µs\) exceed tx - rx \(10 µs\)/,
    ],
    ['an unknown step', { rx: 0, tx: 10, fork: 1 }, /unknown field "fork"/],
    [
      "a net request's steps longer than the request",
      { rx: 0, tx: 10, nicWait: 8, nicConfig: 3 },
      /steps \(11 µs\) exceed tx - rx \(10 µs\)/,
    ],
    ['an array', [1, 2], /res\.gt must be/],
  ];
  for (const [name, gt, re] of badReplyTimes) {
    it(`rejects reply times with ${name}, keeping the request id`, () => {
      const r = parseGuestMessage({ t: 'res', id: 4, ok: true, result: null, gt });
      assert.equal(r.ok, false);
      assert.match((r as { error: string }).error, re);
      assert.equal((r as { id?: number }).id, 4);
    });
  }
});
