import { EventEmitter } from 'node:events';
import type { Duplex } from 'node:stream';
import { type ErrorCode, VmcError } from '../errors.js';

/** How a client's errors name its connection: `QMP connection closed by QEMU`. */
export interface StreamClientNames {
  /** The code every end of the connection fails with. */
  code: ErrorCode;
  /** The protocol, as messages start: `QMP`, `agent`. */
  protocol: string;
  /** Who is on the other end: `QEMU`, `the guest`. */
  peer: string;
}

/**
 * A client on one duplex byte stream (the QMP and the agent client): the connection ends once, with a typed
 * error, at the first of the stream's error, close or end, or the client's own `close()`. The subclass then
 * fails whatever waits on it (`onClosed`), and `'closed'` is emitted with the error.
 */
export abstract class StreamClient extends EventEmitter {
  protected readonly stream: Duplex;
  readonly #names: StreamClientNames;
  #closed: Error | null = null;

  constructor(stream: Duplex, names: StreamClientNames) {
    super();
    this.stream = stream;
    this.#names = names;
    const { code, protocol, peer } = names;
    stream.on('error', (e) =>
      this.fail(new VmcError(code, `${protocol} stream error: ${e.message}`, { cause: e })),
    );
    stream.on('close', () => this.fail(new VmcError(code, `${protocol} connection closed`)));
    stream.on('end', () => this.fail(new VmcError(code, `${protocol} connection closed by ${peer}`)));
  }

  /** True once the connection is closed. */
  get closed(): boolean {
    return this.#closed !== null;
  }

  /** Closes the connection; everything waiting on it fails. Idempotent. */
  close(): void {
    this.fail(new VmcError(this.#names.code, `${this.#names.protocol} client closed`));
    this.stream.destroy();
  }

  /** The error the connection ended with; null while it is open. */
  protected get closedWith(): Error | null {
    return this.#closed;
  }

  /** Ends the connection with `err` (only the first call counts). */
  protected fail(err: Error): void {
    if (this.#closed) return;
    this.#closed = err;
    this.onClosed(err);
    this.emit('closed', err);
  }

  /** Fails what waits on the connection (pending requests, processes); called once, before `'closed'`. */
  protected abstract onClosed(err: Error): void;
}
