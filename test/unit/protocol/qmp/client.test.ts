import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isVmcError } from '../../../../src/errors.js';
import { QmpClient } from '../../../../src/protocol/qmp/client.js';
import { parseQmpLine, QmpDecoder } from '../../../../src/protocol/qmp/codec.js';
import { duplexPair, lines } from '../../../helpers/duplex-pair.js';

const GREETING =
  '{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}}, "capabilities": ["oob"]}}\n';

/** A scripted QEMU: sends the greeting, acknowledges qmp_capabilities, then hands control to the test. */
async function connected() {
  const [client, peer] = duplexPair();
  const qmp = new QmpClient(client, { commandTimeoutMs: 200 });
  const rx = lines(peer);
  peer.write(GREETING);
  const connecting = qmp.connect();
  const caps = JSON.parse(await rx.next());
  assert.equal(caps.execute, 'qmp_capabilities');
  peer.write(`${JSON.stringify({ return: {}, id: caps.id })}\n`);
  await connecting;
  return { qmp, peer, rx };
}

describe('QmpDecoder', () => {
  it('splits lines across chunks and classifies messages', () => {
    const d = new QmpDecoder();
    assert.deepEqual(d.push('{"return": {"a"'), []);
    const out = d.push(
      ': 1}, "id": "c1"}\n{"event": "STOP", "data": {}, "timestamp": {"seconds": 1, "microseconds": 2}}\n',
    );
    assert.equal(out.length, 2);
    assert.deepEqual(out[0], { kind: 'return', id: 'c1', value: { a: 1 } });
    assert.equal(out[1]!.kind, 'event');
  });

  it('rejects a line that is not JSON with a protocol error', () => {
    assert.throws(
      () => parseQmpLine('hello'),
      (e) => isVmcError(e, 'VMC_ERR_QMP_PROTOCOL'),
    );
    assert.throws(
      () => parseQmpLine('[1]'),
      (e) => isVmcError(e, 'VMC_ERR_QMP_PROTOCOL'),
    );
    assert.throws(
      () => parseQmpLine('{"what": 1}'),
      (e) => isVmcError(e, 'VMC_ERR_QMP_PROTOCOL'),
    );
  });
});

describe('QmpClient', () => {
  it('reads the greeting, negotiates capabilities and records the version', async () => {
    const { qmp } = await connected();
    assert.deepEqual(qmp.version, { qemu: { micro: 22, minor: 2, major: 7 } });
    qmp.close();
  });

  it('correlates answers by id even when they arrive out of order', async () => {
    const { qmp, peer, rx } = await connected();
    const a = qmp.execute('query-status');
    const b = qmp.execute('query-kvm');
    const ca = JSON.parse(await rx.next());
    const cb = JSON.parse(await rx.next());
    peer.write(`${JSON.stringify({ return: { enabled: false }, id: cb.id })}\n`);
    peer.write(`${JSON.stringify({ return: { status: 'running' }, id: ca.id })}\n`);
    assert.deepEqual(await a, { status: 'running' });
    assert.deepEqual(await b, { enabled: false });
    qmp.close();
  });

  it('turns a QMP error into VMC_ERR_QMP_COMMAND naming the command and class', async () => {
    const { qmp, peer, rx } = await connected();
    const p = qmp.execute('device_add', { driver: 'nope' });
    const c = JSON.parse(await rx.next());
    assert.deepEqual(c.arguments, { driver: 'nope' });
    peer.write(
      `${JSON.stringify({ error: { class: 'GenericError', desc: "'nope' is not a valid device model name" }, id: c.id })}\n`,
    );
    await assert.rejects(
      p,
      (e) => isVmcError(e, 'VMC_ERR_QMP_COMMAND') && /device_add failed: GenericError/.test(e.message),
    );
    qmp.close();
  });

  it('times out a command that gets no answer, with the transcript in the error', async () => {
    const { qmp } = await connected();
    await assert.rejects(qmp.execute('query-status', undefined, 30), (e) => {
      assert.ok(isVmcError(e, 'VMC_ERR_QMP_TIMEOUT'));
      assert.ok((e.details.transcript as string[]).some((l) => l.includes('query-status')));
      return true;
    });
    qmp.close();
  });

  it('delivers events and lets callers wait for a matching one', async () => {
    const { qmp, peer } = await connected();
    const waiting = qmp.waitEvent('VSERPORT_CHANGE', (e) => e.data.id === 'agentport', 1000);
    peer.write(
      '{"event": "VSERPORT_CHANGE", "data": {"open": true, "id": "other"}, "timestamp": {"seconds": 1, "microseconds": 0}}\n',
    );
    peer.write(
      '{"event": "VSERPORT_CHANGE", "data": {"open": false, "id": "agentport"}, "timestamp": {"seconds": 2, "microseconds": 0}}\n',
    );
    const e = await waiting;
    assert.equal(e.data.open, false);
    qmp.close();
  });

  it('fails pending and later commands once the peer closes', async () => {
    const { qmp, peer } = await connected();
    const p = qmp.execute('query-status');
    peer.end();
    await assert.rejects(p, (e) => isVmcError(e, 'VMC_ERR_QMP_CLOSED'));
    await assert.rejects(qmp.execute('query-status'), (e) => isVmcError(e, 'VMC_ERR_QMP_CLOSED'));
    assert.equal(qmp.closed, true);
  });

  it('closes the connection when the peer sends garbage', async () => {
    const { qmp, peer } = await connected();
    const p = qmp.execute('query-status');
    peer.write('this is not json\n');
    await assert.rejects(p, (e) => isVmcError(e, 'VMC_ERR_QMP_PROTOCOL'));
    assert.equal(qmp.closed, true);
  });

  it('times out when no greeting arrives (another client holds the monitor)', async () => {
    const [client] = duplexPair();
    const qmp = new QmpClient(client);
    await assert.rejects(qmp.connect(30), (e) => isVmcError(e, 'VMC_ERR_QMP_TIMEOUT'));
    qmp.close();
  });
});
