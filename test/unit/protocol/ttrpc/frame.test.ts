import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { isVmcError } from '../../../../src/errors.js';
import {
  encodeFrame,
  FRAME_HEADER_SIZE,
  type Frame,
  FrameReader,
  MAX_FRAME_DATA,
  MessageType,
} from '../../../../src/protocol/ttrpc/frame.js';

const frameArb: fc.Arbitrary<Frame> = fc.record({
  streamId: fc.integer({ min: 0, max: 0xffff_ffff }),
  type: fc.constantFrom(MessageType.Request, MessageType.Response, MessageType.Data),
  flags: fc.integer({ min: 0, max: 0xff }),
  data: fc.uint8Array({ maxLength: 300 }),
});

/** Splits `bytes` at the given cut points (sorted, deduplicated, within range). */
function split(bytes: Buffer, cuts: number[]): Buffer[] {
  const at = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b);
  const out: Buffer[] = [];
  let prev = 0;
  for (const c of [...at, bytes.length]) {
    out.push(bytes.subarray(prev, c));
    prev = c;
  }
  return out;
}

const plain = (f: Frame) => ({ ...f, data: Buffer.from(f.data) });

describe('ttrpc frame', () => {
  it('has containerd/ttrpc channel.go layout: u32 BE length, u32 BE stream id, u8 type, u8 flags', () => {
    const b = encodeFrame({
      streamId: 0x01020304,
      type: MessageType.Response,
      flags: 0x05,
      data: Buffer.from('hi'),
    });
    assert.equal(FRAME_HEADER_SIZE, 10);
    assert.equal(MAX_FRAME_DATA, 4 * 1024 * 1024);
    assert.deepEqual([...b], [0, 0, 0, 2, 1, 2, 3, 4, 2, 5, 0x68, 0x69]);
  });

  it('encode → decode is the identity, however the bytes are split (property)', () => {
    fc.assert(
      fc.property(
        fc.array(frameArb, { maxLength: 8 }),
        fc.array(fc.nat(), { maxLength: 20 }),
        (frames, cuts) => {
          const bytes = Buffer.concat(frames.map(encodeFrame));
          const reader = new FrameReader();
          const got = split(bytes, cuts).flatMap((c) => reader.push(c));
          assert.deepEqual(got.map(plain), frames.map(plain));
          assert.equal(reader.pending, 0);
          assert.equal(reader.error, null);
        },
      ),
    );
  });

  it('refuses to encode more than 4 MiB of data (VMC_ERR_TTRPC_FRAME_TOO_LARGE)', () => {
    const data = new Uint8Array(MAX_FRAME_DATA + 1);
    assert.throws(
      () => encodeFrame({ streamId: 1, type: MessageType.Request, flags: 0, data }),
      (e) => isVmcError(e, 'VMC_ERR_TTRPC_FRAME_TOO_LARGE'),
    );
    assert.equal(
      encodeFrame({ streamId: 1, type: 1, flags: 0, data: data.subarray(1) }).length,
      MAX_FRAME_DATA + 10,
    );
  });

  it('fails on a header announcing more than 4 MiB, keeping the frames before it, and returns nothing after', () => {
    const good = encodeFrame({ streamId: 1, type: MessageType.Request, flags: 0, data: Buffer.from('a') });
    const bad = Buffer.alloc(10);
    bad.writeUInt32BE(MAX_FRAME_DATA + 1, 0);
    bad.writeUInt32BE(3, 4);
    bad[8] = MessageType.Request;
    const reader = new FrameReader();
    const got = reader.push(Buffer.concat([good, bad]));
    assert.equal(got.length, 1);
    assert.ok(isVmcError(reader.error, 'VMC_ERR_TTRPC_PROTOCOL'));
    assert.match(reader.error.message, /exceeds the maximum/);
    assert.deepEqual(reader.push(good), []);
  });

  it('fails on an unknown message type as soon as the header is in (no wait for the data)', () => {
    const b = Buffer.alloc(10);
    b.writeUInt32BE(1000, 0);
    b.writeUInt32BE(1, 4);
    b[8] = 7;
    const reader = new FrameReader();
    assert.deepEqual(reader.push(b), []);
    assert.ok(isVmcError(reader.error, 'VMC_ERR_TTRPC_PROTOCOL'));
    assert.match(reader.error.message, /unknown type 7/);
  });

  it('fails on bytes that are not ttrpc (an HTTP request announces a length of ~1.2 GB)', () => {
    const reader = new FrameReader();
    reader.push(Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'));
    assert.ok(isVmcError(reader.error, 'VMC_ERR_TTRPC_PROTOCOL'));
  });

  it('keeps a truncated frame as pending bytes', () => {
    const f = encodeFrame({ streamId: 1, type: MessageType.Request, flags: 0, data: Buffer.alloc(100) });
    const reader = new FrameReader();
    assert.deepEqual(reader.push(f.subarray(0, 50)), []);
    assert.equal(reader.pending, 40);
    assert.equal(reader.error, null);
  });

  it('reassembles a 4 MiB frame from 64 KiB chunks', () => {
    const data = Buffer.alloc(MAX_FRAME_DATA, 7);
    const f = encodeFrame({ streamId: 9, type: MessageType.Response, flags: 0, data });
    const reader = new FrameReader();
    const got: Frame[] = [];
    for (let i = 0; i < f.length; i += 65536) got.push(...reader.push(f.subarray(i, i + 65536)));
    assert.equal(got.length, 1);
    assert.equal(got[0]!.data.length, MAX_FRAME_DATA);
    assert.equal(got[0]!.streamId, 9);
  });
});
