/**
 * A minimal ttrpc client (unary calls with a deadline), as containerd's ttrpc v1.1 client behaves: stream ids
 * 1, 3, 5, ... (odd: client-initiated), `timeout_nano` set from the caller's timeout, one Response per stream.
 * For tests and for calling containerd (e.g. its events service) later.
 */
import type { Duplex } from 'node:stream';
import { messageOf, VmcError } from '../../errors.js';
import { type Clock, systemClock } from '../../platform/clock.js';
import { type Logger, nullLogger } from '../../platform/logger.js';
import { PendingRequests } from '../pending.js';
import { StreamClient } from '../stream-client.js';
import { encodeFrame, type Frame, FrameReader, MessageType } from './frame.js';
import { Request, Response } from './generated/ttrpc/request.js';
import type { MethodDefinition, RequestOf, ResponseOf, ServiceDefinition } from './service.js';
import { RpcCode, statusError } from './status.js';

/** Options of one call. */
export interface CallOptions {
  /** The deadline, relative (ms): sent as `timeout_nano`; the default is the client's. */
  timeoutMs?: number;
  /** Request metadata (ttrpc KeyValue pairs), e.g. containerd's `containerd-namespace-ttrpc`. */
  metadata?: ReadonlyArray<readonly [string, string]>;
}

/** Options of {@link TtrpcClient}. */
export interface TtrpcClientOptions {
  clock?: Clock;
  logger?: Logger;
  /** Deadline of a call that names none (ms; default 30 s). */
  defaultTimeoutMs?: number;
  /**
   * How long past the deadline the client waits for the server's DeadlineExceeded before it fails the call
   * itself with VMC_ERR_TTRPC_TIMEOUT (ms; default 1000): a live server's answer is the one that counts.
   */
  graceMs?: number;
}

/** The largest stream id; ttrpc's Go client would wrap past it, this one ends the connection first. */
const MAX_STREAM_ID = 0xffff_ffff;

/** A ttrpc client on one duplex byte stream. Failures are VmcErrors: `VMC_ERR_TTRPC_*`. */
export class TtrpcClient extends StreamClient {
  readonly #clock: Clock;
  readonly #log: Logger;
  readonly #defaultTimeoutMs: number;
  readonly #graceMs: number;
  readonly #pending: PendingRequests<number, string>;
  readonly #reader = new FrameReader();
  #nextId = 1;

  constructor(stream: Duplex, opts: TtrpcClientOptions = {}) {
    super(stream, { code: 'VMC_ERR_TTRPC_CLOSED', protocol: 'ttrpc', peer: 'the server' });
    this.#clock = opts.clock ?? systemClock;
    this.#log = (opts.logger ?? nullLogger).child({ subsystem: 'ttrpc-client' });
    this.#defaultTimeoutMs = opts.defaultTimeoutMs ?? 30_000;
    this.#graceMs = opts.graceMs ?? 1000;
    this.#pending = new PendingRequests(this.#clock);
    stream.on('data', (chunk: Buffer) => this.#onData(chunk));
  }

  /** Calls `definition.methods[key]` with `request`; resolves with the decoded response. */
  call<D extends ServiceDefinition, K extends keyof D['methods'] & string>(
    definition: D,
    key: K,
    request: RequestOf<D['methods'][K]>,
    opts: CallOptions = {},
  ): Promise<ResponseOf<D['methods'][K]>> {
    const method = definition.methods[key] as MethodDefinition | undefined;
    if (!method) return Promise.reject(new Error(`${definition.fullName} has no method ${key}`));
    let payload: Uint8Array;
    try {
      payload = method.requestType.encode(request).finish();
    } catch (e) {
      return Promise.reject(e);
    }
    return this.callRaw(definition.fullName, method.name, payload, opts).then(
      (bytes) => method.responseType.decode(bytes) as ResponseOf<D['methods'][K]>,
    );
  }

  /**
   * Sends one request with an encoded payload; resolves with the response's payload bytes, or rejects with
   * VMC_ERR_TTRPC_STATUS (a non-OK status), VMC_ERR_TTRPC_TIMEOUT, VMC_ERR_TTRPC_CLOSED, or
   * VMC_ERR_TTRPC_FRAME_TOO_LARGE (nothing was sent).
   */
  callRaw(service: string, method: string, payload: Uint8Array, opts: CallOptions = {}): Promise<Uint8Array> {
    const closed = this.closedWith;
    if (closed) return Promise.reject(closed);
    const timeoutMs = opts.timeoutMs ?? this.#defaultTimeoutMs;
    if (!(timeoutMs > 0))
      return Promise.reject(new RangeError(`ttrpc call timeout ${timeoutMs} ms is not positive`));
    const id = this.#nextId;
    if (id > MAX_STREAM_ID) {
      this.fail(new VmcError('VMC_ERR_TTRPC_CLOSED', 'ttrpc: stream ids of this connection are used up'));
      return Promise.reject(this.closedWith);
    }
    const req = Request.encode({
      service,
      method,
      payload: Buffer.from(payload),
      timeoutNano: BigInt(Math.ceil(timeoutMs * 1e6)),
      metadata: (opts.metadata ?? []).map(([key, value]) => ({ key, value })),
    }).finish();
    let frame: Buffer;
    try {
      frame = encodeFrame({ streamId: id, type: MessageType.Request, flags: 0, data: req });
    } catch (e) {
      return Promise.reject(e);
    }
    this.#nextId += 2;
    const full = `${service}/${method}`;
    const result = this.#pending.add<Uint8Array>(
      id,
      full,
      timeoutMs + this.#graceMs,
      () =>
        new VmcError('VMC_ERR_TTRPC_TIMEOUT', `ttrpc: ${full} got no answer within ${timeoutMs} ms`, {
          details: { method: full, timeoutMs },
        }),
    );
    this.stream.write(frame);
    return result;
  }

  /** Calls waiting for their responses. */
  get inFlight(): number {
    return this.#pending.size;
  }

  protected override onClosed(err: Error): void {
    this.#pending.failAll(err);
  }

  #onData(chunk: Buffer): void {
    if (this.closed) return;
    for (const frame of this.#reader.push(chunk)) this.#onFrame(frame);
    const err = this.#reader.error;
    if (err) {
      this.fail(err);
      this.stream.destroy();
    }
  }

  #onFrame(frame: Frame): void {
    if (frame.type !== MessageType.Response) {
      this.#log.debug({ streamId: frame.streamId, type: frame.type }, 'ttrpc: non-response frame ignored');
      return;
    }
    const waiting = this.#pending.take(frame.streamId);
    if (!waiting) {
      // ttrpc's client logs "received message for unknown channel" and goes on: a late answer after a timeout.
      this.#log.debug({ streamId: frame.streamId }, 'ttrpc: response for no waiting call');
      return;
    }
    let res: Response;
    try {
      res = Response.decode(frame.data);
    } catch (e) {
      waiting.reject(
        new VmcError(
          'VMC_ERR_TTRPC_PROTOCOL',
          `ttrpc: the response to ${waiting.meta} does not decode: ${messageOf(e)}`,
        ),
      );
      return;
    }
    const code = res.status?.code ?? RpcCode.OK;
    if (code !== RpcCode.OK) waiting.reject(statusError(code, res.status?.message ?? ''));
    else waiting.resolve(res.payload);
  }
}
