/**
 * ttrpc framing (containerd/ttrpc `channel.go`, `PROTOCOL.md`; the v1.1 protocol containerd 1.6 speaks): a
 * 10-byte header — data length (u32 big-endian, header excluded), stream id (u32 big-endian), message type (u8),
 * flags (u8) — then the data. Data is at most 4 MiB, so the first byte of a valid frame is always 0.
 *
 * Unlike the agent framing there is no marker to resynchronise on: after a bad header nothing that follows can be
 * trusted, so {@link FrameReader} fails once and the connection is closed.
 */
import { VmcError } from '../../errors.js';

/** Header size in bytes. */
export const FRAME_HEADER_SIZE = 10;
/** Largest data length (ttrpc's `messageLengthMax`, 4 << 20). */
export const MAX_FRAME_DATA = 4 << 20;

/** The message types of ttrpc 1.x. */
export const MessageType = { Request: 1, Response: 2, Data: 3 } as const;
/** A ttrpc message type. */
export type MessageType = (typeof MessageType)[keyof typeof MessageType];

/** Flags of ttrpc 1.2 streams (`flagRemoteClosed`, `flagRemoteOpen`, `flagNoData`); unary frames carry 0. */
export const FrameFlags = { RemoteClosed: 0x1, RemoteOpen: 0x2, NoData: 0x4 } as const;

/** One frame. */
export interface Frame {
  readonly streamId: number;
  readonly type: MessageType;
  readonly flags: number;
  readonly data: Uint8Array;
}

const U32_MAX = 0xffff_ffff;

/** Encodes one frame; VMC_ERR_TTRPC_FRAME_TOO_LARGE past {@link MAX_FRAME_DATA}. */
export function encodeFrame(frame: Frame): Buffer {
  const { streamId, type, flags, data } = frame;
  if (data.length > MAX_FRAME_DATA)
    throw new VmcError(
      'VMC_ERR_TTRPC_FRAME_TOO_LARGE',
      `ttrpc message of ${data.length} bytes exceeds the maximum of ${MAX_FRAME_DATA}`,
      { details: { bytes: data.length, max: MAX_FRAME_DATA } },
    );
  if (!Number.isInteger(streamId) || streamId < 0 || streamId > U32_MAX)
    throw new RangeError(`ttrpc stream id ${streamId} is not a u32`);
  if (!Number.isInteger(flags) || flags < 0 || flags > 0xff)
    throw new RangeError(`ttrpc flags ${flags} is not a u8`);
  const out = Buffer.allocUnsafe(FRAME_HEADER_SIZE + data.length);
  out.writeUInt32BE(data.length, 0);
  out.writeUInt32BE(streamId, 4);
  out.writeUInt8(type, 8);
  out.writeUInt8(flags, 9);
  out.set(data, FRAME_HEADER_SIZE);
  return out;
}

function isMessageType(t: number): t is MessageType {
  return t === MessageType.Request || t === MessageType.Response || t === MessageType.Data;
}

/**
 * Reassembles frames from a byte stream split anywhere. Each header is validated as soon as its 10 bytes are
 * in: a length above {@link MAX_FRAME_DATA} or an unknown message type sets {@link FrameReader.error}
 * (VMC_ERR_TTRPC_PROTOCOL); the frames completed before it are still returned, and nothing more ever is (the
 * stream is lost). Chunks are kept as they come and copied once
 * per frame, so a 4 MiB frame in 64 KiB reads costs one copy, not sixty-four.
 */
export class FrameReader {
  #chunks: Buffer[] = [];
  #buffered = 0;
  #header: { length: number; streamId: number; type: MessageType; flags: number } | null = null;
  #failed: VmcError | null = null;

  /** Bytes received and not yet returned as a frame (a truncated frame at EOF shows here). */
  get pending(): number {
    return this.#buffered;
  }

  /** Why the stream is lost (a bad header), or null. */
  get error(): VmcError | null {
    return this.#failed;
  }

  /** Feeds bytes; returns the frames they complete, in order (none once {@link error} is set). */
  push(chunk: Uint8Array): Frame[] {
    if (this.#failed) return [];
    if (chunk.length > 0) {
      this.#chunks.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk));
      this.#buffered += chunk.length;
    }
    const out: Frame[] = [];
    for (;;) {
      if (!this.#header) {
        if (this.#buffered < FRAME_HEADER_SIZE) return out;
        this.#header = this.#parseHeader(this.#take(FRAME_HEADER_SIZE));
        if (!this.#header) return out;
      }
      const h = this.#header;
      if (this.#buffered < h.length) return out;
      this.#header = null;
      out.push({ streamId: h.streamId, type: h.type, flags: h.flags, data: this.#take(h.length) });
    }
  }

  #parseHeader(b: Buffer): { length: number; streamId: number; type: MessageType; flags: number } | null {
    const length = b.readUInt32BE(0);
    const streamId = b.readUInt32BE(4);
    const type = b.readUInt8(8);
    const flags = b.readUInt8(9);
    if (length > MAX_FRAME_DATA)
      return this.#fail(
        `frame of ${length} bytes on stream ${streamId} exceeds the maximum of ${MAX_FRAME_DATA}`,
        {
          length,
          streamId,
        },
      );
    if (!isMessageType(type))
      return this.#fail(`frame of unknown type ${type} on stream ${streamId}`, { type, streamId });
    return { length, streamId, type, flags };
  }

  #fail(message: string, details: Record<string, unknown>): null {
    this.#failed = new VmcError('VMC_ERR_TTRPC_PROTOCOL', `ttrpc: ${message}`, { details });
    this.#chunks = [];
    this.#buffered = 0;
    return null;
  }

  /** Removes and returns the first `n` buffered bytes (n ≤ buffered). */
  #take(n: number): Buffer {
    this.#buffered -= n;
    const first = this.#chunks[0];
    if (n === 0) return Buffer.alloc(0);
    if (first && first.length >= n) {
      if (first.length === n) this.#chunks.shift();
      else this.#chunks[0] = first.subarray(n);
      return first.subarray(0, n);
    }
    const out = Buffer.allocUnsafe(n);
    let at = 0;
    while (at < n) {
      const c = this.#chunks[0]!;
      const k = Math.min(c.length, n - at);
      c.copy(out, at, 0, k);
      at += k;
      if (k === c.length) this.#chunks.shift();
      else this.#chunks[0] = c.subarray(k);
    }
    return out;
  }
}
