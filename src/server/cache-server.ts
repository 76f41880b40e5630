import { createServer, type Server as NetServer } from 'node:net';
import { type ChannelOptions, type ConnectionInjector, Server, ServerCredentials } from '@grpc/grpc-js';
import type { MissPolicy } from '../config/schema.js';
import type { PoolSet } from '../factory/pool-set.js';
import { identify } from '../platform/process.js';
import { UndoStack } from '../platform/undo-stack.js';
import { listenUnixSocket, type UnixSocketFile } from '../platform/unix-socket.js';
import { CacheServiceService } from '../protocol/cache/generated/cache.js';
import { type AdoptionResult, adoptIdleVms, findIdleOrphans } from '../vm/adopt.js';
import type { VmDeps } from '../vm/vm.js';
import { cacheService } from './cache-service.js';
import { LeaseTable } from './leases.js';
import type { MetricsListener, PromMetrics } from './metrics.js';
import { SERVER_OPTIONS, tolerantService } from './requests.js';

/** Options of the server. */
export interface CacheServerOptions {
  endpoint: string;
  leaseTimeoutMs: number;
  agentDialTimeoutMs: number;
  metricsEndpoint: string;
  /** What a GetBaseVM that does not choose gets on a miss (`[cache] miss_policy`); default `wait` (Kata's). */
  missPolicy?: MissPolicy;
  /** grpc-js options over {@link SERVER_OPTIONS} (tests shorten the keepalive with it). */
  grpcOptions?: ChannelOptions;
}

/**
 * The VM cache server: the CacheService on a Unix socket (mode 0600: only the owner, as Kata does), in front of
 * a PoolSet (one pool per VM shape; Kata's configuration gives one). `stop()` (SIGINT/SIGTERM or Quit) stops idle VMs, resolves open leases, removes the socket,
 * and never touches VMs already owned by clients.
 */
export class CacheServer {
  readonly #pool: PoolSet;
  readonly #opts: CacheServerOptions;
  readonly #deps: VmDeps;
  readonly #metrics: PromMetrics | null;
  readonly #grpc: Server;
  readonly #leases: LeaseTable;
  #connections = 0;
  #injector: ConnectionInjector | null = null;
  #net: NetServer | null = null;
  #socket: UnixSocketFile | null = null;
  #metricsListener: MetricsListener | null = null;
  #stopping: Promise<void> | null = null;
  #adoption: AdoptionResult | null = null;
  #resolveClosed!: () => void;
  /** Resolves once the server has stopped completely. */
  readonly closed = new Promise<void>((r) => {
    this.#resolveClosed = r;
  });

  constructor(pool: PoolSet, opts: CacheServerOptions, deps: VmDeps, metrics: PromMetrics | null) {
    this.#pool = pool;
    this.#opts = opts;
    this.#deps = deps;
    this.#metrics = metrics;
    // Requests bounded (4 KiB), dead and idle connections closed: see requests.ts.
    this.#grpc = new Server({ ...SERVER_OPTIONS, ...opts.grpcOptions });
    this.#leases = new LeaseTable(identify(process.pid)!, deps, (o) => metrics?.handoffs.inc({ outcome: o }));
  }

  /**
   * Adopts the idle VMs a previous server left when it died (see `#adopt`), binds the socket (replacing a
   * stale one, refusing a live one or any other file) and the metrics endpoint, then starts filling the pool
   * with what adoption did not provide. On failure everything started is undone (adopted VMs are stopped, as
   * the orphans they were), so nothing keeps the process alive.
   */
  async start(): Promise<void> {
    const ep = this.#opts.endpoint;
    const undo = new UndoStack();
    try {
      const adopted = await this.#adopt();
      undo.push('adopted VMs', () => Promise.all(adopted.map((vm) => vm.destroy())));
      this.#grpc.addService(
        tolerantService(CacheServiceService),
        cacheService(this.#pool, this.#leases, this.#deps.logger.child({ subsystem: 'server' }), {
          leaseTimeoutMs: this.#opts.leaseTimeoutMs,
          agentDialTimeoutMs: this.#opts.agentDialTimeoutMs,
          missPolicy: this.#opts.missPolicy ?? 'wait',
          onQuit: () => void this.stop(),
        }),
      );
      // Our own listener (grpc-js neither replaces stale sockets nor sets modes), connections injected into grpc-js.
      const injector = this.#grpc.createConnectionInjector(ServerCredentials.createInsecure());
      this.#injector = injector;
      undo.push('connection injector', () => {
        injector.destroy();
        this.#injector = null;
      });
      const net = createServer((sock) => {
        this.#connections++;
        sock.once('close', () => this.#connections--);
        sock.on('error', () => sock.destroy()); // garbage or a vanished peer ends that connection only
        this.#injector?.injectConnection(sock);
      });
      const socket = await listenUnixSocket(net, ep, {
        key: '[factory] vm_cache_endpoint',
        inUse: `a VM cache server is already serving ${ep}; stop it with 'vmcache factory destroy'`,
        onStale: () =>
          this.#deps.logger.warn({ endpoint: ep }, 'replacing a stale cache socket (nobody answers on it)'),
      });
      this.#net = net;
      this.#socket = socket;
      undo.push('cache socket', async () => {
        await new Promise<void>((r) => net.close(() => r()));
        socket.remove();
        this.#net = null;
        this.#socket = null;
      });
      if (this.#opts.metricsEndpoint && this.#metrics)
        this.#metricsListener = await this.#metrics.serve(this.#opts.metricsEndpoint);
      if (adopted.length)
        for (const vm of this.#pool.adopt(adopted)) void vm.destroy().catch(() => undefined);
      this.#pool.start();
      undo.release();
    } catch (err) {
      await undo.unwind();
      throw err;
    }
  }

  /**
   * Re-adoption: the VMs of the pools' shapes that a server killed with `kill -9` had idle (and, at most, the
   * pools' targets of them) are taken over rather than stopped and booted again (vm/adopt.ts says which are
   * adopted, reaped or left alone). Before the socket is bound: a client meanwhile finds no server, as when
   * the old one died, rather than a pool that is not started yet.
   */
  async #adopt() {
    if (findIdleOrphans(this.#deps.paths.runDir).length === 0) return []; // the usual start: nothing to look at
    const r = await adoptIdleVms(this.#deps, {
      accepts: (rec) => this.#pool.accepts(rec.spec),
      limit: this.#pool.status().target,
    });
    this.#adoption = r;
    if (r.adopted.length || r.reaped.length || r.left.length)
      this.#deps.logger.info(
        { adopted: r.adopted.map((vm) => vm.id), reaped: r.reaped, left: r.left },
        'idle VMs of a previous server: adopted, reaped, left alone',
      );
    return r.adopted;
  }

  /** What `start()` found of a previous server's idle VMs (null before `start()`). */
  get adoption(): AdoptionResult | null {
    return this.#adoption;
  }

  /**
   * What the server holds on behalf of clients: open leases and open connections. Neither grows with bad
   * requests (tests check this after hundreds of them).
   */
  stats(): { leases: number; connections: number } {
    return { leases: this.#leases.size, connections: this.#connections };
  }

  /** Graceful stop. Idempotent; resolves when done. */
  stop(): Promise<void> {
    this.#stopping ??= (async () => {
      this.#net?.close();
      this.#injector?.drain(1_000);
      await this.#pool.close();
      await this.#leases.expireAll();
      this.#grpc.forceShutdown();
      this.#injector?.destroy();
      await this.#metricsListener?.close();
      this.#socket?.remove();
      this.#resolveClosed();
    })();
    return this.#stopping;
  }
}
