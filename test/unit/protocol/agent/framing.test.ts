import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isVmcError } from '../../../../src/errors.js';
import { encodeFrame, FrameDecoder, MAX_PAYLOAD } from '../../../../src/protocol/agent/framing.js';

describe('agent framing', () => {
  it('round-trips messages split at every byte boundary', () => {
    const bytes = Buffer.concat([encodeFrame({ t: 'a', n: 1 }), encodeFrame({ t: 'b', s: 'é✓' })]);
    for (let cut = 0; cut <= bytes.length; cut++) {
      const d = new FrameDecoder();
      const out = [...d.push(bytes.subarray(0, cut)), ...d.push(bytes.subarray(cut))];
      assert.deepEqual(out, [
        { ok: true, value: { t: 'a', n: 1 } },
        { ok: true, value: { t: 'b', s: 'é✓' } },
      ]);
    }
  });

  it("skips garbage before a frame (the tail of a previous owner's frame)", () => {
    const d = new FrameDecoder();
    const frame = encodeFrame({ t: 'x' });
    const out = d.push(Buffer.concat([Buffer.from('VM\x00\x01junk{"t":"y"}'), frame]));
    assert.deepEqual(out, [{ ok: true, value: { t: 'x' } }]);
    assert.ok(d.skippedBytes > 0);
  });

  it('reports a payload that is not JSON and keeps decoding', () => {
    const d = new FrameDecoder();
    const bad = Buffer.concat([Buffer.from('VMC1'), Buffer.from([0, 0, 0, 3]), Buffer.from('{{{')]);
    const out = d.push(Buffer.concat([bad, encodeFrame({ ok: 1 })]));
    assert.equal(out.length, 2);
    assert.equal(out[0]!.ok, false);
    assert.deepEqual(out[1], { ok: true, value: { ok: 1 } });
  });

  it('rejects an oversized length without waiting for the bytes, and resynchronises', () => {
    const d = new FrameDecoder();
    const huge = Buffer.concat([Buffer.from('VMC1'), Buffer.from([0xff, 0xff, 0xff, 0xff])]);
    const out = d.push(Buffer.concat([huge, encodeFrame({ after: true })]));
    assert.equal(out[0]!.ok, false);
    assert.match((out[0] as { reason: string }).reason, /exceeds/);
    assert.deepEqual(out[1], { ok: true, value: { after: true } });
  });

  it('refuses to encode a payload above the limit', () => {
    assert.throws(
      () => encodeFrame({ s: 'x'.repeat(MAX_PAYLOAD) }),
      (e) => isVmcError(e, 'VMC_ERR_AGENT_FRAME_TOO_LARGE') && /exceeds/.test(e.message),
    );
  });
});
