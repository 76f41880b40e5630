/**
 * Agent framing for the fuzz targets (the agent's and the control channel's, which share it): hand-made
 * chunks of a connection, from whole frames made by `encodeFrame` to every way framing goes wrong (truncated
 * frames, garbage, length prefixes over MAX_PAYLOAD, payloads that are not JSON), and the bytes of each.
 */
import fc from 'fast-check';
import { encodeFrame, FRAME_MAGIC, HEADER_SIZE, MAX_PAYLOAD } from '../src/protocol/agent/framing.js';
import { Raw, toJson } from './fuzz-common.js';

/** A piece of what a connection carries. */
export type Chunk =
  | { kind: 'frame'; msg: unknown }
  | { kind: 'cut'; msg: unknown; keep: number }
  | { kind: 'junk'; bytes: Uint8Array }
  | { kind: 'length'; length: number; body: Uint8Array }
  | { kind: 'payload'; text: string };

/** Whether `v` holds a Raw within a few levels (messages are shallow; Raw marks text encodeFrame cannot make). */
export function hasRaw(v: unknown, depth = 0): boolean {
  if (v instanceof Raw) return true;
  if (depth > 8 || typeof v !== 'object' || v === null) return false;
  return Object.values(v).some((x) => hasRaw(x, depth + 1));
}

/** A frame of `text` as the agent frames it, whatever its size (past MAX_PAYLOAD the decoder must skip it). */
function frameOf(text: string): Buffer {
  const payload = Buffer.from(text, 'utf8');
  const header = Buffer.alloc(HEADER_SIZE);
  FRAME_MAGIC.copy(header, 0);
  header.writeUInt32BE(payload.length, 4);
  return Buffer.concat([header, payload]);
}

/** The frame of `msg`: encodeFrame's, or the same framing around text it cannot make (Raw, oversized). */
export function frame(msg: unknown): Buffer {
  if (!hasRaw(msg)) {
    try {
      return encodeFrame(msg);
    } catch {
      // larger than MAX_PAYLOAD: framed anyway below
    }
  }
  return frameOf(toJson(msg) ?? 'null');
}

/** The bytes of a chunk. */
export function bytesOf(c: Chunk): Buffer {
  switch (c.kind) {
    case 'frame':
      return frame(c.msg);
    case 'cut': {
      const f = frame(c.msg);
      return f.subarray(0, Math.max(1, Math.floor(f.length * c.keep)));
    }
    case 'junk':
      return Buffer.from(c.bytes);
    case 'length': {
      const h = Buffer.alloc(HEADER_SIZE);
      FRAME_MAGIC.copy(h, 0);
      h.writeUInt32BE(c.length, 4);
      return Buffer.concat([h, c.body]);
    }
    case 'payload':
      return frameOf(c.text);
  }
}

/** Chunks around messages from `message`: mostly whole frames, and every way framing can go wrong. */
export function chunkOf(message: fc.Arbitrary<unknown>): fc.Arbitrary<Chunk> {
  return fc.oneof(
    { weight: 12, arbitrary: message.map((msg): Chunk => ({ kind: 'frame', msg })) },
    {
      weight: 1,
      arbitrary: fc
        .tuple(message, fc.double({ min: 0, max: 0.99, noNaN: true }))
        .map(([msg, keep]): Chunk => ({ kind: 'cut', msg, keep })),
    },
    {
      weight: 2,
      arbitrary: fc
        .oneof(
          fc.uint8Array({ maxLength: 64 }),
          fc
            .constantFrom('VMC', 'VMC1', 'VMC1\u0000', 'VMC1\u0000\u0000\u0000\u0002{}', 'VMVMC1')
            .map((s) => Buffer.from(s, 'latin1')),
        )
        .map((bytes): Chunk => ({ kind: 'junk', bytes })),
    },
    {
      weight: 1,
      arbitrary: fc
        .tuple(
          fc.oneof(
            fc.constantFrom(MAX_PAYLOAD + 1, 0xffffffff, 2 ** 31),
            fc.integer({ min: MAX_PAYLOAD, max: 0xffffffff }),
          ),
          fc.uint8Array({ maxLength: 16 }),
        )
        .map(([length, body]): Chunk => ({ kind: 'length', length, body })),
    },
    {
      weight: 1,
      arbitrary: fc
        .oneof(
          fc.string(),
          fc.json({ maxDepth: 2 }),
          fc.constantFrom('', '{', 'null', '"x"', '{"t":"req","id":1}'),
        )
        .filter((t) => !t.includes('exec'))
        .map((text): Chunk => ({ kind: 'payload', text })),
    },
  );
}
