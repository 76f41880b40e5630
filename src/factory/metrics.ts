/**
 * What the factories report. The server implements it with prom-client (server/metrics.ts); a client-side
 * composer gets a {@link FallbackCounter}; tests and the bench use `nullMetrics`.
 */
export interface FactoryMetrics {
  bootSeconds(seconds: number): void;
  bootFailure(): void;
  acquireSeconds(seconds: number, hit: boolean): void;
  acquireTimeout(): void;
  poolSize(ready: number, booting: number): void;
  replaced(reason: 'dead' | 'age' | 'unhealthy'): void;
  fallback(fields: string[]): void;
}

/** Metrics that go nowhere. */
export const nullMetrics: FactoryMetrics = {
  bootSeconds() {},
  bootFailure() {},
  acquireSeconds() {},
  acquireTimeout() {},
  poolSize() {},
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
  poolSize(): void {}
  replaced(): void {}
  fallback(fields: string[]): void {
    this.total++;
    for (const f of fields) this.byField.set(f, (this.byField.get(f) ?? 0) + 1);
  }
}
