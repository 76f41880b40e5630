import { chmodSync, existsSync, lstatSync, mkdirSync, unlinkSync } from 'node:fs';
import type { Server as HttpServer } from 'node:http';
import { connect, createServer, type Server as NetServer } from 'node:net';
import { dirname } from 'node:path';
import { type ConnectionInjector, Server, ServerCredentials } from '@grpc/grpc-js';
import { VmcError } from '../errors.js';
import type { CachingFactory } from '../factory/cache.js';
import { identify } from '../platform/process.js';
import { CacheServiceService } from '../protocol/cache/generated/cache.js';
import type { VmDeps } from '../vm/vm.js';
import { cacheService } from './cache-service.js';
import { LeaseTable } from './leases.js';
import type { PromMetrics } from './metrics.js';

/** Options of the server. */
export interface CacheServerOptions {
  endpoint: string;
  leaseTimeoutMs: number;
  agentDialTimeoutMs: number;
  metricsEndpoint: string;
}

/** Resolves true when something accepts connections on the socket at `path`. */
function answers(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(path);
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

/**
 * The VM cache server: the CacheService on a Unix socket (mode 0600: only the owner, as Kata does), in front of
 * a CachingFactory. `stop()` (SIGINT/SIGTERM or Quit) stops idle VMs, resolves open leases, removes the socket,
 * and never touches VMs already owned by clients.
 */
export class CacheServer {
  readonly #pool: CachingFactory;
  readonly #opts: CacheServerOptions;
  readonly #deps: VmDeps;
  readonly #metrics: PromMetrics | null;
  readonly #grpc = new Server();
  readonly #leases: LeaseTable;
  #injector: ConnectionInjector | null = null;
  #net: NetServer | null = null;
  #metricsServer: HttpServer | null = null;
  #stopping: Promise<void> | null = null;
  #resolveClosed!: () => void;
  /** Resolves once the server has stopped completely. */
  readonly closed = new Promise<void>((r) => {
    this.#resolveClosed = r;
  });

  constructor(pool: CachingFactory, opts: CacheServerOptions, deps: VmDeps, metrics: PromMetrics | null) {
    this.#pool = pool;
    this.#opts = opts;
    this.#deps = deps;
    this.#metrics = metrics;
    this.#leases = new LeaseTable(identify(process.pid)!, deps, (o) => metrics?.handoffs.inc({ outcome: o }));
  }

  /** Binds the socket (replacing a stale one, refusing a live one) and starts filling the pool. */
  async start(): Promise<void> {
    const ep = this.#opts.endpoint;
    mkdirSync(dirname(ep), { recursive: true, mode: 0o755 });
    if (existsSync(ep)) {
      if (!lstatSync(ep).isSocket()) {
        throw new VmcError(
          'VMC_ERR_CONFIG_INVALID',
          `[factory] vm_cache_endpoint ${ep} exists and is not a socket; refusing to replace it`,
        );
      }
      if (await answers(ep)) {
        throw new VmcError(
          'VMC_ERR_CACHE_ENDPOINT_IN_USE',
          `a VM cache server is already serving ${ep}; stop it with 'vmcache factory destroy'`,
        );
      }
      this.#deps.logger.warn({ endpoint: ep }, 'replacing a stale cache socket (nobody answers on it)');
      unlinkSync(ep);
    }
    this.#grpc.addService(
      CacheServiceService,
      cacheService(this.#pool, this.#leases, this.#deps.logger.child({ subsystem: 'server' }), {
        leaseTimeoutMs: this.#opts.leaseTimeoutMs,
        agentDialTimeoutMs: this.#opts.agentDialTimeoutMs,
        onQuit: () => void this.stop(),
      }),
    );
    // Our own listener (grpc-js neither replaces stale sockets nor sets modes), connections injected into grpc-js.
    this.#injector = this.#grpc.createConnectionInjector(ServerCredentials.createInsecure());
    const net = createServer((sock) => {
      sock.on('error', () => sock.destroy()); // garbage or a vanished peer ends that connection only
      this.#injector?.injectConnection(sock);
    });
    const oldMask = process.umask(0o177); // the socket is created 0600: no window with looser permissions
    try {
      await new Promise<void>((resolve, reject) => {
        net.once('error', reject);
        net.listen(ep, resolve);
      });
    } finally {
      process.umask(oldMask);
    }
    chmodSync(ep, 0o600);
    this.#net = net;
    if (this.#opts.metricsEndpoint && this.#metrics)
      this.#metricsServer = await this.#metrics.serve(this.#opts.metricsEndpoint);
    this.#pool.start();
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
      this.#metricsServer?.close();
      if (
        !this.#opts.metricsEndpoint.includes(':') &&
        this.#opts.metricsEndpoint &&
        existsSync(this.#opts.metricsEndpoint)
      ) {
        unlinkSync(this.#opts.metricsEndpoint);
      }
      if (existsSync(this.#opts.endpoint)) unlinkSync(this.#opts.endpoint);
      this.#resolveClosed();
    })();
    return this.#stopping;
  }
}
