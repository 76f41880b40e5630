import { existsSync, unlinkSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { FactoryMetrics } from '../factory/metrics.js';

/** Prometheus metrics of the cache server (names follow `<thing>_total` / `_seconds`). */
export class PromMetrics implements FactoryMetrics {
  readonly registry = new Registry();
  readonly #ready = new Gauge({
    name: 'vmcache_pool_ready',
    help: 'VMs ready in the cache',
    registers: [this.registry],
  });
  readonly #booting = new Gauge({
    name: 'vmcache_pool_booting',
    help: 'VMs booting for the cache',
    registers: [this.registry],
  });
  readonly #boot = new Histogram({
    name: 'vmcache_boot_seconds',
    help: 'Time to boot a VM for the cache',
    buckets: [0.25, 0.5, 1, 2, 4, 8, 16, 32, 64],
    registers: [this.registry],
  });
  readonly #bootFailures = new Counter({
    name: 'vmcache_boot_failures_total',
    help: 'Failed boots',
    registers: [this.registry],
  });
  readonly #acquire = new Histogram({
    name: 'vmcache_acquire_seconds',
    help: 'Time GetBaseVM waited for a VM',
    labelNames: ['result'],
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25, 1, 5, 30],
    registers: [this.registry],
  });
  readonly #hits = new Counter({
    name: 'vmcache_hits_total',
    help: 'GetBaseVM served from a ready VM',
    registers: [this.registry],
  });
  readonly #misses = new Counter({
    name: 'vmcache_misses_total',
    help: 'GetBaseVM that had to wait for a boot (cold fallback inside the cache)',
    registers: [this.registry],
  });
  readonly #timeouts = new Counter({
    name: 'vmcache_acquire_timeouts_total',
    help: 'GetBaseVM that gave up on an empty cache',
    registers: [this.registry],
  });
  readonly #replaced = new Counter({
    name: 'vmcache_replaced_total',
    help: 'Idle VMs replaced',
    labelNames: ['reason'],
    registers: [this.registry],
  });
  readonly #fallbacks = new Counter({
    name: 'vmcache_config_fallbacks_total',
    help: 'Requests booted directly because the config differed',
    registers: [this.registry],
  });
  readonly handoffs = new Counter({
    name: 'vmcache_handoffs_total',
    help: 'Hand-offs by outcome',
    labelNames: ['outcome'],
    registers: [this.registry],
  });

  bootSeconds(s: number): void {
    this.#boot.observe(s);
  }
  bootFailure(): void {
    this.#bootFailures.inc();
  }
  acquireSeconds(s: number, hit: boolean): void {
    this.#acquire.observe({ result: hit ? 'hit' : 'miss' }, s);
    (hit ? this.#hits : this.#misses).inc();
  }
  acquireTimeout(): void {
    this.#timeouts.inc();
  }
  poolSize(ready: number, booting: number): void {
    this.#ready.set(ready);
    this.#booting.set(booting);
  }
  replaced(reason: string): void {
    this.#replaced.inc({ reason });
  }
  fallback(): void {
    this.#fallbacks.inc();
  }

  /** Serves `/metrics` on a Unix socket path or `127.0.0.1:PORT`. */
  async serve(endpoint: string): Promise<Server> {
    const server = createServer((req, res) => {
      if (req.url !== '/metrics') {
        res.writeHead(404).end();
        return;
      }
      void this.registry
        .metrics()
        .then((body) => res.writeHead(200, { 'content-type': this.registry.contentType }).end(body));
    });
    const m = /^(127\.0\.0\.1|localhost|\[::1\]):(\d+)$/.exec(endpoint);
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      if (m)
        server.listen(
          Number(m[2]),
          m[1] === 'localhost' ? '127.0.0.1' : m[1]!.replace(/[[\]]/g, ''),
          resolve,
        );
      else {
        if (existsSync(endpoint)) unlinkSync(endpoint);
        server.listen(endpoint, resolve);
      }
    });
    return server;
  }
}
