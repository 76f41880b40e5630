import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseControlReply, parseControlRequest } from '../../../../src/protocol/control/messages.js';
import { controlSocketPath } from '../../../../src/protocol/control/socket-path.js';

describe('control channel messages (validated at both ends)', () => {
  it('accepts the requests a client sends', () => {
    for (const req of [
      { t: 'start' },
      { t: 'kill', signal: 'SIGTERM' },
      { t: 'signal-all', name: 'c1', signal: 'SIGKILL' },
      { t: 'ps' },
      { t: 'stdin', data: 'aGk=' },
      { t: 'resize', rows: 30, cols: 100 },
      {
        t: 'exec',
        pid: 42,
        process: { args: ['sh'], env: [], cwd: '/', uid: 0, gid: 0, additionalGids: [] },
      },
      {
        t: 'exec',
        pid: 42,
        process: { args: ['sh'], env: [], cwd: '/', uid: 0, gid: 0, additionalGids: [] },
        terminal: { rows: 24, cols: 80 },
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
      [{ t: 'resize', rows: 24 }, /resize.cols must be an integer from 1 to 65535/],
      [{ t: 'resize', rows: -1, cols: 80 }, /resize.rows/],
      [
        {
          t: 'exec',
          pid: 1,
          process: { args: ['x'], env: [], cwd: '/', uid: 0, gid: 0, additionalGids: [] },
          terminal: { rows: 24, cols: '80' },
        },
        /exec.terminal.cols/,
      ],
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

  it("checks exec.process with the agent's process schema, complete (one copy for both protocols)", () => {
    const proc = { args: ['sh'], env: [], cwd: '/', uid: 0, gid: 0, additionalGids: [] };
    const cases: Array<[object, RegExp]> = [
      [
        { ...proc, args: ['/'.repeat(4096)] },
        /exec.process.args\[0\] must be a program of at most 4095 bytes/,
      ],
      [{ ...proc, env: undefined }, /exec.process.env must be a string array/],
      [{ ...proc, gid: 1.5 }, /exec.process.gid must be a non-negative integer/],
      [{ ...proc, additionalGids: [-1] }, /exec.process.additionalGids/],
    ];
    for (const [process, re] of cases) {
      const r = parseControlRequest({ t: 'exec', pid: 1, process });
      assert.equal(r.ok, false, JSON.stringify(process).slice(0, 80));
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
