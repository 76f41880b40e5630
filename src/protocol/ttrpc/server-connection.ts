/**
 * One connection of a ttrpc server: frames in, unary calls dispatched concurrently, one response frame per
 * request on the request's stream id, in whatever order the handlers finish.
 *
 * What is answered and what closes the connection follows containerd/ttrpc v1.1's server (containerd 1.6):
 * - an even stream id: InvalidArgument "StreamID must be odd for client initiated streams", on that id;
 * - a Request that does not decode: InvalidArgument "unmarshal request error: ...";
 * - an unknown service or method: Unimplemented "service X" / "method Y" (ttrpc's codes, not NotFound);
 * - a payload the method's request type cannot decode: InvalidArgument (ttrpc itself says Internal here);
 * - a handler that throws: its {@link statusError} code, or what `statusOf` maps, else Internal;
 * - `timeout_nano`: at the deadline the handler's signal aborts and DeadlineExceeded is answered at once;
 * - a response larger than a frame: ResourceExhausted instead.
 * Data frames (ttrpc 1.2 streams) are ignored, as ttrpc 1.1 ignores types it does not handle. A frame longer
 * than 4 MiB, of an unknown type, or a Response sent to the server closes the connection with a log line (ttrpc
 * discards an oversized frame and answers ResourceExhausted; a peer that sends one is not containerd, whose
 * client refuses to, so nothing after it is trusted).
 *
 * Responses are written as they are ready, without waiting for the socket to drain: a Task API response is small
 * (the largest, Pids or Stats, is a few KiB) and containerd reads its socket continuously.
 */
import type { Duplex } from 'node:stream';
import { messageOf, VmcError } from '../../errors.js';
import type { Clock } from '../../platform/clock.js';
import type { Logger } from '../../platform/logger.js';
import { encodeFrame, type Frame, FrameReader, MessageType } from './frame.js';
import { Request, Response } from './generated/ttrpc/request.js';
import type { CallContext, MethodLookup } from './service.js';
import { RpcCode, type RpcStatus, statusOfError } from './status.js';

/** What a connection needs from its server. */
export interface ServerConnectionOptions {
  readonly lookup: MethodLookup;
  readonly logger: Logger;
  readonly clock: Clock;
  /** Maps a handler's error to a status (e.g. VMC_ERR_CONTAINER_NOT_FOUND → NotFound); undefined: Internal. */
  readonly statusOf?: (err: unknown) => RpcStatus | undefined;
}

/** Longest timer Node keeps (a longer one fires at once): a deadline further away than this gets no timer. */
const MAX_TIMER_MS = 2 ** 31 - 1;

interface Call {
  readonly abort: AbortController;
  cancelTimer: () => void;
}

/** Serves one duplex byte stream until it ends; `onClosed` runs once, when it has. */
export class ServerConnection {
  readonly #stream: Duplex;
  readonly #opts: ServerConnectionOptions;
  readonly #log: Logger;
  readonly #reader = new FrameReader();
  readonly #calls = new Map<number, Call>();
  readonly #onClosed: () => void;
  #closed = false;

  constructor(stream: Duplex, opts: ServerConnectionOptions, onClosed: () => void) {
    this.#stream = stream;
    this.#opts = opts;
    this.#log = opts.logger;
    this.#onClosed = onClosed;
    stream.on('data', (chunk: Buffer) => this.#onData(chunk));
    stream.on('end', () => this.#end('the client closed the connection'));
    stream.on('close', () => this.#end('the connection closed'));
    stream.on('error', (e) => this.#end(`connection error: ${e.message}`));
  }

  /** Calls in flight. */
  get inFlight(): number {
    return this.#calls.size;
  }

  /** Closes the connection; calls in flight are aborted and never answered. Idempotent. */
  close(): void {
    this.#end('the server closed the connection');
  }

  #onData(chunk: Buffer): void {
    if (this.#closed) return;
    for (const frame of this.#reader.push(chunk)) this.#onFrame(frame);
    const err = this.#reader.error;
    if (err) this.#protocolError(err);
  }

  #protocolError(err: VmcError): void {
    this.#log.warn({ code: err.code, ...err.details }, `ttrpc: closing the connection: ${err.message}`);
    this.#end(err.message);
  }

  #onFrame(frame: Frame): void {
    if (this.#closed) return;
    switch (frame.type) {
      case MessageType.Request:
        this.#onRequest(frame);
        return;
      case MessageType.Data:
        this.#log.debug({ streamId: frame.streamId }, 'ttrpc: data frame ignored (streams are not served)');
        return;
      case MessageType.Response:
        this.#protocolError(
          this.#violation(`a client sent a response frame (stream ${frame.streamId})`, frame.streamId),
        );
        return;
    }
  }

  #violation(message: string, streamId: number): VmcError {
    return new VmcError('VMC_ERR_TTRPC_PROTOCOL', `ttrpc: ${message}`, { details: { streamId } });
  }

  #onRequest(frame: Frame): void {
    const id = frame.streamId;
    if (id % 2 !== 1) {
      this.#respond(id, {
        code: RpcCode.InvalidArgument,
        message: 'StreamID must be odd for client initiated streams',
      });
      return;
    }
    if (this.#calls.has(id)) {
      this.#respond(id, {
        code: RpcCode.InvalidArgument,
        message: `StreamID ${id} is in use by another call`,
      });
      return;
    }
    let req: Request;
    try {
      req = Request.decode(frame.data);
    } catch (e) {
      this.#respond(id, {
        code: RpcCode.InvalidArgument,
        message: `unmarshal request error: ${messageOf(e)}`,
      });
      return;
    }
    const found = this.#opts.lookup(req.service, req.method);
    if (found.found === 'no-service') {
      this.#respond(id, { code: RpcCode.Unimplemented, message: `service ${req.service}` });
      return;
    }
    if (found.found === 'no-method') {
      this.#respond(id, { code: RpcCode.Unimplemented, message: `method ${req.method}` });
      return;
    }
    const { definition, handler } = found.method;
    const full = `${req.service}/${req.method}`;
    let decoded: unknown;
    try {
      decoded = definition.requestType.decode(req.payload);
    } catch (e) {
      this.#respond(id, {
        code: RpcCode.InvalidArgument,
        message: `ttrpc: error unmarshalling payload of ${full}: ${messageOf(e)}`,
      });
      return;
    }
    if (req.timeoutNano < 0n) {
      this.#respond(id, { code: RpcCode.DeadlineExceeded, message: 'context deadline exceeded' });
      return;
    }

    const abort = new AbortController();
    const call: Call = { abort, cancelTimer: () => {} };
    const timeoutMs = req.timeoutNano > 0n ? Number(req.timeoutNano) / 1e6 : undefined;
    const deadline = timeoutMs === undefined ? undefined : this.#opts.clock.monotonic() + timeoutMs;
    if (timeoutMs !== undefined && timeoutMs <= MAX_TIMER_MS) {
      call.cancelTimer = this.#opts.clock.setTimeout(() => {
        if (this.#calls.get(id) !== call) return;
        this.#calls.delete(id);
        abort.abort(new Error(`ttrpc: deadline of ${timeoutMs} ms exceeded`));
        this.#log.debug({ streamId: id, method: full, timeoutMs }, 'ttrpc: deadline exceeded');
        this.#respond(id, { code: RpcCode.DeadlineExceeded, message: 'context deadline exceeded' });
      }, Math.ceil(timeoutMs));
    }
    this.#calls.set(id, call);

    const metadata = new Map<string, string[]>();
    for (const kv of req.metadata) metadata.set(kv.key, [...(metadata.get(kv.key) ?? []), kv.value]);
    const ctx: CallContext = {
      service: req.service,
      method: req.method,
      signal: abort.signal,
      deadline,
      metadata,
    };
    Promise.resolve()
      .then(() => handler(decoded, ctx))
      .then(
        (res) => {
          if (!this.#finish(id, call)) return;
          let payload: Uint8Array;
          try {
            payload = definition.responseType.encode(res).finish();
          } catch (e) {
            this.#log.error({ method: full, err: messageOf(e) }, 'ttrpc: the response does not encode');
            this.#respond(id, {
              code: RpcCode.Internal,
              message: `ttrpc: error marshaling payload: ${messageOf(e)}`,
            });
            return;
          }
          this.#respond(id, { code: RpcCode.OK, message: '' }, payload);
        },
        (err: unknown) => {
          if (!this.#finish(id, call)) return;
          const status = this.#opts.statusOf?.(err) ?? statusOfError(err);
          if (status) {
            this.#respond(id, status);
            return;
          }
          this.#log.error({ method: full, err: messageOf(err) }, 'ttrpc: handler failed');
          this.#respond(id, { code: RpcCode.Internal, message: messageOf(err) });
        },
      );
  }

  /** True when call `id` is still this one and waiting (then it is removed); false when it was dropped. */
  #finish(id: number, call: Call): boolean {
    if (this.#calls.get(id) !== call) return false;
    this.#calls.delete(id);
    call.cancelTimer();
    return true;
  }

  #respond(streamId: number, status: RpcStatus, payload?: Uint8Array): void {
    if (this.#closed) return;
    const encode = (s: RpcStatus, p?: Uint8Array) =>
      Response.encode({
        status: { code: s.code, message: s.message, details: [] },
        payload: Buffer.from(p ?? new Uint8Array()),
      }).finish();
    let frame: Buffer;
    try {
      frame = encodeFrame({ streamId, type: MessageType.Response, flags: 0, data: encode(status, payload) });
    } catch (e) {
      // Only the payload can make a response too large; its status alone always fits.
      this.#log.warn(
        { streamId, err: messageOf(e) },
        'ttrpc: response too large, answered ResourceExhausted',
      );
      frame = encodeFrame({
        streamId,
        type: MessageType.Response,
        flags: 0,
        data: encode({ code: RpcCode.ResourceExhausted, message: messageOf(e) }),
      });
    }
    this.#stream.write(frame);
  }

  #end(why: string): void {
    if (this.#closed) return;
    this.#closed = true;
    const pending = this.#reader.pending;
    if (pending > 0 || this.#calls.size > 0)
      this.#log.debug(
        { pendingBytes: pending, inFlight: this.#calls.size },
        `ttrpc: connection ended: ${why}`,
      );
    for (const call of this.#calls.values()) {
      call.cancelTimer();
      call.abort.abort(new Error(`ttrpc: ${why}`));
    }
    this.#calls.clear();
    this.#stream.destroy();
    this.#onClosed();
  }
}
