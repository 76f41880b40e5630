/**
 * A ttrpc server (containerd/ttrpc's protocol, unary calls): services registered from ts-proto generic
 * definitions, any number of connections, each served by a {@link ServerConnection}. A connection that breaks
 * the protocol is closed alone; the others, and the listener, go on.
 */
import { EventEmitter } from 'node:events';
import { createServer, type Server } from 'node:net';
import type { Duplex } from 'node:stream';
import { type Clock, systemClock } from '../../platform/clock.js';
import { type Logger, nullLogger } from '../../platform/logger.js';
import { listenUnixSocket, type UnixSocketFile } from '../../platform/unix-socket.js';
import { ServerConnection } from './server-connection.js';
import type {
  MethodLookup,
  RegisteredMethod,
  ServiceDefinition,
  ServiceImplementation,
  UnaryHandler,
} from './service.js';
import type { RpcStatus } from './status.js';

/** Options of {@link TtrpcServer}. */
export interface TtrpcServerOptions {
  logger?: Logger;
  clock?: Clock;
  /** Maps a handler's error to a status (a {@link statusError} needs no mapping); undefined: Internal. */
  statusOf?: (err: unknown) => RpcStatus | undefined;
}

/**
 * Serves registered services. Events: `'connection'` (count) when one opens, `'disconnect'` (count) when one
 * has closed.
 */
export class TtrpcServer extends EventEmitter {
  readonly #services = new Map<string, Map<string, RegisteredMethod>>();
  readonly #connections = new Set<ServerConnection>();
  readonly #listeners: Array<{ server: Server; file: UnixSocketFile | null }> = [];
  readonly #logger: Logger;
  readonly #clock: Clock;
  readonly #statusOf: TtrpcServerOptions['statusOf'];
  #nextConnection = 1;
  #closed = false;

  constructor(opts: TtrpcServerOptions = {}) {
    super();
    this.#logger = (opts.logger ?? nullLogger).child({ subsystem: 'ttrpc' });
    this.#clock = opts.clock ?? systemClock;
    this.#statusOf = opts.statusOf;
  }

  /**
   * Registers the handlers of `impl` under `definition.fullName`; a method without a handler is answered
   * Unimplemented, as an unknown one is. Throws on a second registration of the service or on a streaming
   * method (ttrpc 1.1, what containerd 1.6 speaks, has no streams).
   */
  register<D extends ServiceDefinition>(definition: D, impl: ServiceImplementation<D>): void {
    if (this.#services.has(definition.fullName))
      throw new Error(`ttrpc service ${definition.fullName} is already registered`);
    const methods = new Map<string, RegisteredMethod>();
    for (const [key, method] of Object.entries(definition.methods)) {
      const handler = (impl as Record<string, UnaryHandler<unknown, unknown> | undefined>)[key];
      if (!handler) continue;
      if (method.requestStream || method.responseStream)
        throw new Error(
          `ttrpc method ${definition.fullName}/${method.name} streams; only unary methods are served`,
        );
      methods.set(method.name, { definition: method, handler: handler.bind(impl) });
    }
    this.#services.set(definition.fullName, methods);
  }

  /** Connections open now. */
  get connectionCount(): number {
    return this.#connections.size;
  }

  /** Serves one connection (an accepted socket, or one end of an in-memory pair). */
  serve(stream: Duplex): void {
    if (this.#closed) {
      stream.destroy();
      return;
    }
    const logger = this.#logger.child({ connection: this.#nextConnection++ });
    const lookup: MethodLookup = (service, method) => {
      const methods = this.#services.get(service);
      if (!methods) return { found: 'no-service' };
      const m = methods.get(method);
      return m ? { found: 'method', method: m } : { found: 'no-method' };
    };
    const conn = new ServerConnection(
      stream,
      { lookup, logger, clock: this.#clock, statusOf: this.#statusOf },
      () => {
        this.#connections.delete(conn);
        this.emit('disconnect', this.#connections.size);
      },
    );
    this.#connections.add(conn);
    this.emit('connection', this.#connections.size);
  }

  /** Serves every connection `server` accepts (e.g. one listening on an inherited fd). */
  attach(server: Server): void {
    server.on('connection', (sock) => this.serve(sock));
    this.#listeners.push({ server, file: null });
  }

  /**
   * Listens on the Unix socket `path` (mode 0600 unless told; a stale socket is replaced, a live one is
   * VMC_ERR_CACHE_ENDPOINT_IN_USE: see `platform/unix-socket.ts`).
   */
  async listen(path: string, opts: { mode?: number } = {}): Promise<void> {
    const server = createServer((sock) => this.serve(sock));
    const file = await listenUnixSocket(server, path, {
      key: 'ttrpc address',
      inUse: `a ttrpc server already serves ${path}`,
      mode: opts.mode,
      onStale: (p) => this.#logger.info({ path: p }, 'ttrpc: replacing a stale socket'),
    });
    this.#listeners.push({ server, file });
  }

  /** Stops listening (removing the sockets it created) and closes every connection. Idempotent. */
  async close(): Promise<void> {
    this.#closed = true;
    const listeners = this.#listeners.splice(0);
    for (const conn of [...this.#connections]) conn.close();
    await Promise.all(
      listeners.map(
        ({ server, file }) =>
          new Promise<void>((resolve) => {
            server.close(() => resolve());
            file?.remove();
          }),
      ),
    );
  }
}
