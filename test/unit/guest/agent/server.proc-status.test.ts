import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { AgentServer, type GuestOps } from '../../../../src/guest/agent/server.js';
import { AgentClient, type AgentClientOptions } from '../../../../src/protocol/agent/client.js';
import { FrameDecoder } from '../../../../src/protocol/agent/framing.js';
import { parseHostMessage } from '../../../../src/protocol/agent/messages.js';
import { duplexPair } from '../../../helpers/duplex-pair.js';

/** Guest operations these tests never reach (`connected`, optional, is left out). */
const noOps = new Proxy({} as GuestOps, {
  get: (_, op) =>
    op === 'connected' ? undefined : () => Promise.reject(new Error(`unexpected guest op ${String(op)}`)),
});

/** A connected, handshaken client on an agent server; `checks()` counts the proc-status requests it sent. */
async function pair(server = new AgentServer(noOps), opts: AgentClientOptions = {}) {
  const [hostSide, guestSide] = duplexPair();
  const decoder = new FrameDecoder();
  let checks = 0;
  guestSide.on('data', (c: Buffer) => {
    for (const f of decoder.push(c)) if (f.ok && (f.value as { op?: string }).op === 'proc-status') checks++;
  });
  void server.serve(guestSide);
  const client = new AgentClient(hostSide, { requestTimeoutMs: 5_000, ...opts });
  await client.handshake(2_000, 20);
  return { server, client, checks: () => checks };
}

describe('proc-status (the liveness check)', () => {
  it('is a valid request only with a proc id', () => {
    assert.ok(parseHostMessage({ t: 'req', id: 1, op: 'proc-status', proc: 3 }).ok);
    const bad = parseHostMessage({ t: 'req', id: 2, op: 'proc-status' });
    assert.equal(bad.ok, false);
    assert.match((bad as { error: string }).error, /proc-status needs proc/);
  });

  it('answers running for a live process, and not running after its exit or for one it never knew', async () => {
    const { client } = await pair();
    const p = await client.exec({ args: ['/bin/sleep', '30'] });
    assert.deepEqual(await client.request({ op: 'proc-status', proc: p.proc }), { running: true });
    assert.deepEqual(await client.request({ op: 'proc-status', proc: 999 }), { running: false });
    await p.kill('KILL');
    await p.wait();
    assert.deepEqual(await client.request({ op: 'proc-status', proc: p.proc }), { running: false });
    client.close();
  });

  it("answers not running for an earlier session's process: its exit goes to nobody", async () => {
    const server = new AgentServer(noOps);
    const first = await pair(server);
    const p = await first.client.exec({ args: ['/bin/sleep', '30'] });
    first.client.close();
    const second = await pair(server);
    assert.equal(server.running, 1);
    assert.deepEqual(await second.client.request({ op: 'proc-status', proc: p.proc }), { running: false });
    await second.client.request({ op: 'signal', proc: p.proc, signal: 'SIGKILL' });
    second.client.close();
  });

  it('keeps a client waiting on a silent process that runs, checking it meanwhile', async () => {
    const { client, checks } = await pair(undefined, { livenessIntervalMs: 40 });
    const p = await client.exec({ args: ['/bin/sh', '-c', 'sleep 0.4; exit 5'] });
    assert.deepEqual(await p.wait(), { code: 5, signal: null });
    assert.ok(checks() >= 2, `expected the silent process to be checked, got ${checks()} checks`);
    client.close();
  });
});
