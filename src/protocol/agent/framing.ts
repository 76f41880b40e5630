/**
 * Agent framing over the virtio-serial byte stream: `"VMC1"` magic, u32 big-endian payload length, then the
 * payload (UTF-8 JSON). Why a magic: virtio-serial has no connection identity, so after a hand-off the new
 * owner can receive the tail of a frame meant for the old one, and the guest can receive the tail of a frame the
 * old owner was writing. The decoder resynchronises on the next magic instead of misreading the length.
 * See docs/agent-protocol.md.
 */
import { VmcError } from '../../errors.js';

/** The 4-byte frame marker. */
export const FRAME_MAGIC = Buffer.from('VMC1', 'latin1');
/** Header size: magic + length. */
export const HEADER_SIZE = 8;
/** Largest payload accepted (stdout chunks are ≤ 64 KiB before base64; 1 MiB leaves ample room). */
export const MAX_PAYLOAD = 1024 * 1024;

/** Encodes one message as a frame; throws VMC_ERR_AGENT_FRAME_TOO_LARGE past MAX_PAYLOAD. */
export function encodeFrame(message: unknown): Buffer {
  const payload = Buffer.from(JSON.stringify(message), 'utf8');
  if (payload.length > MAX_PAYLOAD)
    throw new VmcError(
      'VMC_ERR_AGENT_FRAME_TOO_LARGE',
      `agent frame of ${payload.length} bytes exceeds ${MAX_PAYLOAD}`,
      { details: { bytes: payload.length, max: MAX_PAYLOAD } },
    );
  const header = Buffer.allocUnsafe(HEADER_SIZE);
  FRAME_MAGIC.copy(header, 0);
  header.writeUInt32BE(payload.length, 4);
  return Buffer.concat([header, payload]);
}

/** What the decoder produced for one frame: a parsed JSON value, or a description of why it was dropped. */
export type DecodedFrame = { ok: true; value: unknown } | { ok: false; reason: string };

/**
 * Incremental frame decoder. Garbage before a magic, oversized lengths and invalid JSON never throw: they are
 * reported as `{ ok: false }` (or skipped, for garbage) and decoding continues with the next frame.
 */
export class FrameDecoder {
  #buf: Buffer = Buffer.alloc(0);
  /** Bytes skipped while looking for a frame marker (for diagnostics). */
  skippedBytes = 0;

  /** Feeds bytes; returns the frames they complete. */
  push(chunk: Buffer): DecodedFrame[] {
    this.#buf = this.#buf.length === 0 ? chunk : Buffer.concat([this.#buf, chunk]);
    const out: DecodedFrame[] = [];
    for (;;) {
      const at = this.#buf.indexOf(FRAME_MAGIC);
      if (at < 0) {
        // Keep a possible partial magic at the end.
        const keep = Math.min(this.#buf.length, FRAME_MAGIC.length - 1);
        this.skippedBytes += this.#buf.length - keep;
        this.#buf = this.#buf.subarray(this.#buf.length - keep);
        return out;
      }
      if (at > 0) {
        this.skippedBytes += at;
        this.#buf = this.#buf.subarray(at);
      }
      if (this.#buf.length < HEADER_SIZE) return out;
      const len = this.#buf.readUInt32BE(4);
      if (len > MAX_PAYLOAD) {
        out.push({ ok: false, reason: `frame length ${len} exceeds ${MAX_PAYLOAD}` });
        this.#buf = this.#buf.subarray(FRAME_MAGIC.length); // resync after this marker
        continue;
      }
      if (this.#buf.length < HEADER_SIZE + len) return out;
      const payload = this.#buf.subarray(HEADER_SIZE, HEADER_SIZE + len);
      this.#buf = this.#buf.subarray(HEADER_SIZE + len);
      try {
        out.push({ ok: true, value: JSON.parse(payload.toString('utf8')) });
      } catch {
        out.push({ ok: false, reason: 'frame payload is not JSON' });
      }
    }
  }

  /** Drops buffered bytes (a new peer is on the line). */
  reset(): void {
    this.#buf = Buffer.alloc(0);
  }
}
