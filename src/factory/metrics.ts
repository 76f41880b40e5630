/** What the factories report. The server implements it with prom-client; everything else uses `nullMetrics`. */
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
