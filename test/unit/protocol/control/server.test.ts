import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { isVmcError } from '../../../../src/errors.js';
import { encodeFrame, FrameDecoder } from '../../../../src/protocol/agent/framing.js';
import { ControlClient } from '../../../../src/protocol/control/client.js';
import { ControlServer } from '../../../../src/protocol/control/server.js';

/** Sends raw frames on a fresh connection and collects the first `n` replies. */
function exchange(path: string, frames: Buffer[], n: number): Promise<unknown[]> {
  return new Promise((resolve, reject) => {
    const s = connect(path);
    const dec = new FrameDecoder();
    const got: unknown[] = [];
    s.on('data', (c: Buffer) => {
      for (const f of dec.push(c)) if (f.ok) got.push(f.value);
      if (got.length >= n) {
        s.destroy();
        resolve(got);
      }
    });
    s.on('error', reject);
    s.on('connect', () => {
      for (const f of frames) s.write(f);
    });
  });
}

describe('control server', () => {
  const dir = mkdtempSync('/tmp/vmc-ctl-');
  const path = join(dir, 'c.sock');

  it('answers a bad frame or request with VMC_ERR_CONTROL_PROTOCOL, and serves the next request', async () => {
    const server = await ControlServer.listen(path, async (req, reply) => {
      if (req.t === 'ps') {
        reply({ t: 'ok', result: { pids: [1] } });
        return 'replied';
      }
      return undefined;
    });
    try {
      const replies = await exchange(path, [encodeFrame({ t: 'reboot' }), encodeFrame({ t: 'ps' })], 2);
      assert.deepEqual(replies[0], {
        t: 'error',
        code: 'VMC_ERR_CONTROL_PROTOCOL',
        message: 'unknown request "reboot"',
      });
      assert.deepEqual(replies[1], { t: 'ok', result: { pids: [1] } });
      const c = await ControlClient.connect(path, 'c');
      await assert.rejects(
        c.request({ t: 'kill', signal: 'TERM; rm -rf /' }),
        (e) => isVmcError(e, 'VMC_ERR_CONTROL_PROTOCOL') && /kill.signal/.test(e.message),
      );
      c.close();
    } finally {
      await server.close();
    }
  });

  it('refuses a second exec on one connection with VMC_ERR_CONTROL_PROTOCOL', async () => {
    const server = await ControlServer.listen(path, async () => ({
      write: async () => {},
      end: async () => {},
      kill: async () => {},
      resize: async () => {},
      abandon: () => {},
    }));
    const exec = {
      t: 'exec',
      pid: 7,
      process: { args: ['sh'], env: [], cwd: '/', uid: 0, gid: 0, additionalGids: [] },
    };
    try {
      const replies = await exchange(path, [encodeFrame(exec), encodeFrame(exec)], 1);
      assert.deepEqual(replies[0], {
        t: 'error',
        code: 'VMC_ERR_CONTROL_PROTOCOL',
        message: 'exec: this connection carries one already',
      });
    } finally {
      await server.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
