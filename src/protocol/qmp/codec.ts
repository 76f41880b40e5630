import { VmcError } from '../../errors.js';

/** One message QEMU sends: the greeting, a command result, a command error, or an asynchronous event. */
export type QmpInbound =
  | { kind: 'greeting'; version: unknown; capabilities: string[] }
  | { kind: 'return'; id: string | undefined; value: unknown }
  | { kind: 'error'; id: string | undefined; errorClass: string; desc: string }
  | {
      kind: 'event';
      event: string;
      data: Record<string, unknown>;
      timestamp: { seconds: number; microseconds: number };
    };

/** Most QMP lines are well under 64 KiB; anything past 16 MiB without a newline is a broken peer. */
const MAX_LINE = 16 * 1024 * 1024;

/**
 * Splits a byte stream into QMP messages (QMP is newline-delimited JSON, one object per line) and classifies
 * them. Throws VMC_ERR_QMP_PROTOCOL on a line that is not a QMP object.
 */
export class QmpDecoder {
  #buf = '';

  /** Feeds bytes; returns the complete messages they finish. */
  push(chunk: Buffer | string): QmpInbound[] {
    this.#buf += typeof chunk === 'string' ? chunk : chunk.toString('utf8');
    const out: QmpInbound[] = [];
    let nl = this.#buf.indexOf('\n');
    while (nl >= 0) {
      const line = this.#buf.slice(0, nl).trim();
      this.#buf = this.#buf.slice(nl + 1);
      if (line.length > 0) out.push(parseQmpLine(line));
      nl = this.#buf.indexOf('\n');
    }
    if (this.#buf.length > MAX_LINE) {
      throw new VmcError('VMC_ERR_QMP_PROTOCOL', `QMP line longer than ${MAX_LINE} bytes`);
    }
    return out;
  }
}

/** Parses and classifies one QMP line. */
export function parseQmpLine(line: string): QmpInbound {
  let msg: unknown;
  try {
    msg = JSON.parse(line);
  } catch (cause) {
    throw new VmcError(
      'VMC_ERR_QMP_PROTOCOL',
      `QMP peer sent a line that is not JSON: ${line.slice(0, 120)}`,
      {
        cause,
      },
    );
  }
  if (typeof msg !== 'object' || msg === null || Array.isArray(msg)) {
    throw new VmcError('VMC_ERR_QMP_PROTOCOL', `QMP peer sent a non-object: ${line.slice(0, 120)}`);
  }
  const m = msg as Record<string, unknown>;
  const id = typeof m.id === 'string' ? m.id : undefined;
  if ('QMP' in m) {
    const q = m.QMP as { version?: unknown; capabilities?: unknown };
    return {
      kind: 'greeting',
      version: q?.version,
      capabilities: Array.isArray(q?.capabilities) ? q.capabilities : [],
    };
  }
  if ('return' in m) return { kind: 'return', id, value: m.return };
  if ('error' in m) {
    const e = (m.error ?? {}) as { class?: unknown; desc?: unknown };
    return { kind: 'error', id, errorClass: String(e.class ?? 'GenericError'), desc: String(e.desc ?? '') };
  }
  if (typeof m.event === 'string') {
    return {
      kind: 'event',
      event: m.event,
      data: (m.data as Record<string, unknown>) ?? {},
      timestamp: (m.timestamp as { seconds: number; microseconds: number }) ?? {
        seconds: 0,
        microseconds: 0,
      },
    };
  }
  throw new VmcError('VMC_ERR_QMP_PROTOCOL', `QMP peer sent an unknown message: ${line.slice(0, 120)}`);
}
