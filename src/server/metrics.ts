import { createServer } from 'node:http';
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import { parseMetricsEndpoint } from '../config/endpoint.js';
import { MISS_POLICIES, type MissPolicy } from '../config/schema.js';
import { VmcError } from '../errors.js';
import type { EvictReason } from '../factory/base.js';
import type { FactoryMetrics, HandoutCheck, PoolSetMetrics, RouteKind } from '../factory/metrics.js';
import { listenUnixSocket } from '../platform/unix-socket.js';

/** The metrics listener {@link PromMetrics.serve} started. */
export interface MetricsListener {
  /** Stops serving and removes the socket it created (only that socket). Idempotent. */
  close(): Promise<void>;
}

const KEY = '[cache] metrics_endpoint';

/**
 * Prometheus metrics of the cache server (names follow `<thing>_total` / `_seconds`). Every pool series carries a
 * `pool` label (the pool's name; Kata's single pool is `default`), so `sum without (pool)` gives the server's.
 */
export class PromMetrics implements PoolSetMetrics {
  readonly registry = new Registry();
  readonly #ready = new Gauge({
    name: 'vmcache_pool_ready',
    help: 'VMs ready in the pool',
    labelNames: ['pool'],
    registers: [this.registry],
  });
  readonly #booting = new Gauge({
    name: 'vmcache_pool_booting',
    help: 'VMs booting for the pool',
    labelNames: ['pool'],
    registers: [this.registry],
  });
  readonly #target = new Gauge({
    name: 'vmcache_pool_target',
    help: 'VMs the pool keeps ready now (demand-sized between its min and max)',
    labelNames: ['pool'],
    registers: [this.registry],
  });
  readonly #boot = new Histogram({
    name: 'vmcache_boot_seconds',
    help: 'Time to boot a VM for the pool (waiting for a boot slot included)',
    labelNames: ['pool'],
    buckets: [0.25, 0.5, 1, 2, 4, 8, 16, 32, 64],
    registers: [this.registry],
  });
  readonly #bootFailures = new Counter({
    name: 'vmcache_boot_failures_total',
    help: 'Failed boots',
    labelNames: ['pool'],
    registers: [this.registry],
  });
  readonly #acquire = new Histogram({
    name: 'vmcache_acquire_seconds',
    help: 'Time GetBaseVM waited for a VM',
    labelNames: ['pool', 'result'],
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25, 1, 5, 30],
    registers: [this.registry],
  });
  readonly #hits = new Counter({
    name: 'vmcache_hits_total',
    help: 'GetBaseVM served from a ready VM',
    labelNames: ['pool'],
    registers: [this.registry],
  });
  readonly #misses = new Counter({
    name: 'vmcache_misses_total',
    help: 'GetBaseVM that found no VM ready, by the miss policy applied (wait for a boot, fail, boot cold)',
    labelNames: ['pool', 'policy'],
    registers: [this.registry],
  });
  readonly #handoutDiscards = new Counter({
    name: 'vmcache_handout_discards_total',
    help: 'VMs discarded at hand-out: QEMU dead or silent (server check), agent silent after resume (client report)',
    labelNames: ['pool', 'check'],
    registers: [this.registry],
  });
  readonly #timeouts = new Counter({
    name: 'vmcache_acquire_timeouts_total',
    help: 'GetBaseVM that gave up on an empty cache',
    labelNames: ['pool'],
    registers: [this.registry],
  });
  readonly #replaced = new Counter({
    name: 'vmcache_replaced_total',
    help: 'Idle VMs stopped, by reason: dead, age (max_age), shrink (the target went down)',
    labelNames: ['pool', 'reason'],
    registers: [this.registry],
  });
  readonly #routes = new Counter({
    name: 'vmcache_routes_total',
    help: 'GetBaseVM by how it was served: its exact shape, a larger one as is, a smaller one to grow, or a miss',
    labelNames: ['kind'],
    registers: [this.registry],
  });
  readonly handoffs = new Counter({
    name: 'vmcache_handoffs_total',
    help: 'Hand-offs by outcome',
    labelNames: ['outcome'],
    registers: [this.registry],
  });

  constructor() {
    for (const kind of ['exact', 'larger', 'grow', 'miss'] as const) this.#routes.inc({ kind }, 0);
  }

  route(kind: RouteKind): void {
    this.#routes.inc({ kind });
  }

  /** The metrics of one pool; its series are exported from the first call on, at 0. */
  pool(name: string): FactoryMetrics {
    const pool = { pool: name };
    // Every label value exported from the start (at 0): a rate over a series that appears late reads wrong.
    for (const policy of MISS_POLICIES) this.#misses.inc({ ...pool, policy }, 0);
    for (const check of ['qemu', 'agent'] as const) this.#handoutDiscards.inc({ ...pool, check }, 0);
    for (const reason of ['dead', 'age', 'shrink'] as const) this.#replaced.inc({ ...pool, reason }, 0);
    this.#hits.inc(pool, 0);
    this.#bootFailures.inc(pool, 0);
    this.#timeouts.inc(pool, 0);
    this.#ready.set(pool, 0);
    this.#booting.set(pool, 0);
    return {
      bootSeconds: (s: number) => this.#boot.observe(pool, s),
      bootFailure: () => this.#bootFailures.inc(pool),
      acquireSeconds: (s: number, hit: boolean) => {
        this.#acquire.observe({ ...pool, result: hit ? 'hit' : 'miss' }, s);
        if (hit) this.#hits.inc(pool);
      },
      miss: (policy: MissPolicy) => this.#misses.inc({ ...pool, policy }),
      handoutDiscard: (check: HandoutCheck) => this.#handoutDiscards.inc({ ...pool, check }),
      acquireTimeout: () => this.#timeouts.inc(pool),
      poolSize: (ready: number, booting: number) => {
        this.#ready.set(pool, ready);
        this.#booting.set(pool, booting);
      },
      poolTarget: (target: number) => this.#target.set(pool, target),
      replaced: (reason: EvictReason) => this.#replaced.inc({ ...pool, reason }),
      // Only a composer reports fallbacks, and the server runs none: each client composes and counts its own
      // (factory/metrics.ts `FallbackCounter`, logged at warn with the differing fields). Kata's protocol has no
      // message to report them to the server, so the server exports no fallback counter that could only read 0.
      fallback: () => {},
    };
  }

  /**
   * Serves `/metrics` on a Unix socket path (mode 0600 whatever the umask; only a stale socket is replaced, any
   * other file there is an error) or on `127.0.0.1:PORT`. On failure nothing is left listening.
   */
  async serve(endpoint: string): Promise<MetricsListener> {
    const server = createServer((req, res) => {
      if (req.url !== '/metrics') {
        res.writeHead(404).end();
        return;
      }
      this.registry.metrics().then(
        (body) => res.writeHead(200, { 'content-type': this.registry.contentType }).end(body),
        () => res.writeHead(500).end(),
      );
    });
    const ep = parseMetricsEndpoint(endpoint);
    if (ep.kind === 'off') throw new VmcError('VMC_ERR_CONFIG_INVALID', `${KEY} is empty: nothing to serve`);
    let remove = () => {};
    if (ep.kind === 'tcp') {
      await new Promise<void>((resolve, reject) => {
        server.once('error', (e) =>
          reject(
            new VmcError(
              'VMC_ERR_CACHE_ENDPOINT_UNUSABLE',
              `${KEY} ${endpoint}: cannot listen: ${e.message}`,
              {
                cause: e,
              },
            ),
          ),
        );
        server.listen(ep.port, ep.host, resolve);
      });
    } else {
      const file = await listenUnixSocket(server, ep.path, {
        key: KEY,
        inUse: `something is already serving ${KEY} ${ep.path}; stop it or pick another path`,
      });
      remove = () => file.remove();
    }
    let closing: Promise<void> | null = null;
    return {
      close: () =>
        (closing ??= new Promise<void>((resolve) => {
          server.close(() => resolve());
          server.closeAllConnections();
        }).finally(remove)),
    };
  }
}
