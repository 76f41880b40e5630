import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { controlSocketPath, parseControlReply, parseControlRequest } from '../../../src/sandbox/control.js';

describe('control channel messages (validated at both ends)', () => {
  it('accepts the requests a client sends', () => {
    for (const req of [
      { t: 'start' },
      { t: 'kill', signal: 'SIGTERM' },
      { t: 'signal-all', name: 'c1', signal: 'SIGKILL' },
      { t: 'ps' },
      { t: 'stdin', data: 'aGk=' },
      {
        t: 'exec',
        pid: 42,
        process: { args: ['sh'], env: [], cwd: '/', uid: 0, gid: 0, additionalGids: [] },
      },
    ])
      assert.deepEqual(parseControlRequest(req), { ok: true, req });
  });

  it('rejects malformed requests, naming the field', () => {
    const cases: Array<[unknown, RegExp]> = [
      [[], /not an object/],
      [{ t: 'reboot' }, /unknown request/],
      [{ t: 'kill', signal: 'TERM; rm -rf /' }, /kill.signal/],
      [{ t: 'signal-all', name: '../init.scope', signal: 'SIGKILL' }, /signal-all.name/],
      [{ t: 'signal-all', name: 'c1' }, /signal-all.signal/],
      [{ t: 'exec', pid: -1, process: {} }, /exec.pid/],
      [
        { t: 'exec', pid: 1, process: { args: [], env: [], cwd: '/', uid: 0, gid: 0, additionalGids: [] } },
        /args/,
      ],
      [
        {
          t: 'exec',
          pid: 1,
          process: { args: ['x'], env: [], cwd: 'rel', uid: 0, gid: 0, additionalGids: [] },
        },
        /cwd/,
      ],
      [
        {
          t: 'exec',
          pid: 1,
          process: { args: ['x'], env: [], cwd: '/', uid: -1, gid: 0, additionalGids: [] },
        },
        /uid/,
      ],
    ];
    for (const [v, re] of cases) {
      const r = parseControlRequest(v);
      assert.equal(r.ok, false, JSON.stringify(v));
      assert.match((r as { error: string }).error, re);
    }
  });

  it('validates replies', () => {
    assert.deepEqual(parseControlReply({ t: 'exit', code: 3, signal: null }), {
      t: 'exit',
      code: 3,
      signal: null,
    });
    assert.equal(parseControlReply({ t: 'out', fd: 3, data: '' }), null);
    assert.equal(parseControlReply({ t: 'error', code: 1 }), null);
  });

  it('keeps socket paths short whatever the root and id (containerd ids are 64 hex chars)', () => {
    const p = controlSocketPath('/run/vmcache', `/run/containerd/runc/k8s.io`, 'f'.repeat(64));
    assert.ok(p.length < 107, p);
    assert.notEqual(p, controlSocketPath('/run/vmcache', '/other/root', 'f'.repeat(64)));
  });
});
