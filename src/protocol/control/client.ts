import type { Socket } from 'node:net';
import { messageOf, VmcError } from '../../errors.js';
import type { StdinSink } from '../../platform/streams.js';
import { connectUnixSocket } from '../../platform/unix-socket.js';
import { encodeFrame, FrameDecoder } from '../agent/framing.js';
import { type ControlReply, type ControlRequest, parseControlReply } from './messages.js';

/** A client connection to a shim's control socket. */
export class ControlClient {
  readonly #socket: Socket;
  readonly #decoder = new FrameDecoder();
  #waiter: { resolve: (r: ControlReply) => void; reject: (e: Error) => void } | null = null;
  #closed: Error | null = null;
  /** Called for `out` and `exit` events (exec). */
  onEvent: (r: ControlReply) => void = () => {};

  private constructor(socket: Socket) {
    this.#socket = socket;
    socket.on('data', (c: Buffer) => {
      for (const f of this.#decoder.push(c)) {
        const r = f.ok ? parseControlReply(f.value) : null;
        if (!r) continue;
        if ((r.t === 'ok' || r.t === 'error') && this.#waiter) {
          const w = this.#waiter;
          this.#waiter = null;
          w.resolve(r);
        } else this.onEvent(r);
      }
    });
    const gone = () => {
      this.#closed ??= new VmcError(
        'VMC_ERR_CONTAINER_UNREACHABLE',
        'the container process closed the connection',
      );
      this.#waiter?.reject(this.#closed);
      this.#waiter = null;
      this.onClose();
    };
    socket.on('error', gone);
    socket.on('close', gone);
  }

  /** Called once when the connection ends. */
  onClose: () => void = () => {};

  /** Connects; VMC_ERR_CONTAINER_UNREACHABLE when nobody listens. */
  static connect(path: string, id: string): Promise<ControlClient> {
    return connectUnixSocket(path).then(
      (s) => new ControlClient(s),
      (e) => {
        throw new VmcError(
          'VMC_ERR_CONTAINER_UNREACHABLE',
          `container ${id}: its host-side process does not answer (${messageOf(e)})`,
          { cause: e },
        );
      },
    );
  }

  /** Sends a request and waits for `ok` (its result) or `error` (thrown as VmcError with the shim's code). */
  async request<T = unknown>(req: ControlRequest): Promise<T> {
    if (this.#closed) throw this.#closed;
    const reply = await new Promise<ControlReply>((resolve, reject) => {
      this.#waiter = { resolve, reject };
      this.#socket.write(encodeFrame(req));
    });
    if (reply.t === 'error') {
      const code = reply.code.startsWith('VMC_ERR_') ? reply.code : 'VMC_ERR_CONTAINER_UNREACHABLE';
      throw new VmcError(code as 'VMC_ERR_INVALID_STATE', reply.message);
    }
    return (reply as { result?: T }).result as T;
  }

  /** Whether the connection has ended. */
  get closed(): boolean {
    return this.#closed !== null;
  }

  /** Sends without waiting for a reply (stdin, signal). */
  send(req: ControlRequest): void {
    if (!this.#closed) this.#socket.write(encodeFrame(req));
  }

  /** The stdin of the process this connection exec'd, for relayStdin. */
  stdin(): StdinSink {
    return {
      write: (d) => this.send({ t: 'stdin', data: d.toString('base64') }),
      end: () => this.send({ t: 'close-stdin' }),
    };
  }

  close(): void {
    this.#socket.destroy();
  }
}
