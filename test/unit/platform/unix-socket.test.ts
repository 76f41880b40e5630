import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { connectUnixSocket, socketAnswers, tryConnectUnixSocket } from '../../../src/platform/unix-socket.js';

describe('Unix socket connect', () => {
  const dir = mkdtempSync(join(tmpdir(), 'vmc-sock-'));
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('connects to a listening socket and leaves no listener of its own on it', async () => {
    const path = join(dir, 'a.sock');
    // The peer's end is destroyed at once: its reset is expected here.
    const server = createServer((c) => c.on('error', () => {}).end());
    await new Promise<void>((r) => server.listen(path, r));
    try {
      const s = await connectUnixSocket(path);
      assert.equal(s.listenerCount('error'), 0);
      s.destroy();
      assert.equal(await socketAnswers(path), true);
    } finally {
      await new Promise((r) => server.close(r));
    }
  });

  it('fails with the connection error, or null / false for polling, when nobody listens', async () => {
    const path = join(dir, 'none.sock');
    await assert.rejects(connectUnixSocket(path), { code: 'ENOENT' });
    assert.equal(await tryConnectUnixSocket(path), null);
    assert.equal(await socketAnswers(path), false);
  });
});
