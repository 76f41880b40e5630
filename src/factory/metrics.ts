import type { MissPolicy } from '../config/schema.js';
import type { EvictReason } from './base.js';

/** Which hand-out check found a VM unfit: the server's (QEMU dead or not answering) or a client's (the agent). */
export type HandoutCheck = 'qemu' | 'agent';

/**
 * What the factories report. The server implements it with prom-client (server/metrics.ts); a client-side
 * composer gets a {@link FallbackCounter}; tests and the bench use `nullMetrics`.
 */
export interface FactoryMetrics {
  bootSeconds(seconds: number): void;
  bootFailure(): void;
  acquireSeconds(seconds: number, hit: boolean): void;
  acquireTimeout(): void;
  /** A request found no VM ready; `policy` is what it got (wait for a boot, a failure, a cold boot). */
  miss(policy: MissPolicy): void;
  /** A VM was discarded at hand-out instead of being used (the requester got another, or the miss policy). */
  handoutDiscard(check: HandoutCheck): void;
  poolSize(ready: number, booting: number): void;
  /** The pool's target (what it keeps ready) changed. */
  poolTarget(target: number): void;
  replaced(reason: EvictReason): void;
  fallback(fields: string[]): void;
}

/** How a request was served by a server of several pools (pool-routing.ts), or not at all (a miss). */
export type RouteKind = 'exact' | 'larger' | 'grow' | 'miss';

/** A server's metrics: one labelled view per pool, and the router's choices. */
export interface PoolSetMetrics {
  /** The metrics of the pool named `name` (every series labelled with it). */
  pool(name: string): FactoryMetrics;
  route(kind: RouteKind): void;
}

/** Metrics that go nowhere. */
export const nullMetrics: FactoryMetrics = {
  bootSeconds() {},
  bootFailure() {},
  acquireSeconds() {},
  acquireTimeout() {},
  miss() {},
  handoutDiscard() {},
  poolSize() {},
  poolTarget() {},
  replaced() {},
  fallback() {},
};

/**
 * The sink of a client-side composer (VmFactory in the runtime, `vm run` and the API), where only `fallback`
 * ever fires: the pool's events happen in the server. A client has no Prometheus registry and nothing scrapes
 * it, and the server's `vmcache_config_fallbacks_total` is another process's counter that the cache protocol
 * has no message for (Kata's proto stays as it is). So a client counts its own fallbacks, here, for as long as
 * it lives: one VM for a CLI process, so the record that lasts is the composer's warning naming the fields.
 * The other events are not counted rather than faked.
 */
export class FallbackCounter implements FactoryMetrics {
  /** Requests booted directly because the config differed. */
  total = 0;
  /** Of those, how many differed in each boot-relevant field. */
  readonly byField = new Map<string, number>();

  bootSeconds(): void {}
  bootFailure(): void {}
  acquireSeconds(): void {}
  acquireTimeout(): void {}
  miss(): void {}
  handoutDiscard(): void {}
  poolSize(): void {}
  poolTarget(): void {}
  replaced(): void {}
  fallback(fields: string[]): void {
    this.total++;
    for (const f of fields) this.byField.set(f, (this.byField.get(f) ?? 0) + 1);
  }
}

/** Pool-set metrics that go nowhere. */
export const nullPoolSetMetrics: PoolSetMetrics = {
  pool: () => nullMetrics,
  route() {},
};
