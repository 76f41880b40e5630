import { existsSync } from 'node:fs';
import { VmcError } from '../errors.js';
import { CachingFactory } from '../factory/cache.js';
import { DirectFactory } from '../factory/direct.js';
import { RemoteCacheFactory } from '../factory/remote-cache.js';
import { identify, isAlive } from '../platform/process.js';
import { CacheServer } from '../server/cache-server.js';
import { PromMetrics } from '../server/metrics.js';
import { sweepOrphans } from '../vm/sweep.js';
import { hostVmSpec } from './common.js';
import type { CliContext } from './context.js';

/**
 * `vmcache factory init`: with `vm_cache_number > 0`, runs the VM cache server in the foreground until
 * SIGINT/SIGTERM or a Quit RPC.
 */
export async function factoryInit(ctx: CliContext): Promise<number> {
  const { factory, cache } = ctx.config;
  if (factory.vmCacheNumber === 0) {
    throw new VmcError(
      'VMC_ERR_CONFIG_INVALID',
      `${ctx.config.source ?? '(built-in defaults)'}: [factory] vm_cache_number is 0: there is no cache to serve; set it to the number of VMs to keep ready`,
    );
  }
  const spec = hostVmSpec(ctx);
  // VMs of a previous server that crashed (kill -9) have a dead owner: stop them before serving.
  const swept = await sweepOrphans(ctx);
  if (swept.reaped.length)
    ctx.say(`factory: stopped ${swept.reaped.length} VM(s) orphaned by a previous server`);
  const metrics = new PromMetrics();
  const pool = new CachingFactory(
    new DirectFactory(spec, ctx, { agentTimeoutMs: ctx.config.agentDialTimeoutMs }),
    {
      size: factory.vmCacheNumber,
      maxParallelBoots: cache.maxParallelBoots,
      maxAgeMs: cache.maxAgeMs,
      healthIntervalMs: cache.healthIntervalMs,
      acquireTimeoutMs: cache.acquireTimeoutMs,
      retryInitialMs: cache.retryInitialMs,
      retryMaxMs: cache.retryMaxMs,
    },
    { clock: ctx.clock, logger: ctx.logger, metrics },
  );
  const server = new CacheServer(
    pool,
    {
      endpoint: factory.vmCacheEndpoint,
      leaseTimeoutMs: cache.leaseTimeoutMs,
      agentDialTimeoutMs: ctx.config.agentDialTimeoutMs,
      metricsEndpoint: cache.metricsEndpoint,
    },
    ctx,
    metrics,
  );
  await server.start();
  ctx.say(
    `factory: VM cache serving ${factory.vmCacheEndpoint} (pid ${process.pid}), keeping ${factory.vmCacheNumber} VM(s) ready${cache.metricsEndpoint ? `, metrics on ${cache.metricsEndpoint}` : ''}`,
  );
  const onSignal = (sig: string) => {
    ctx.say(`factory: ${sig}: stopping (idle VMs are stopped, handed-out VMs are left alone)`);
    void server.stop();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  await server.closed;
  process.off('SIGINT', onSignal);
  process.off('SIGTERM', onSignal);
  ctx.say('factory: stopped');
  return 0;
}

/** `vmcache factory status [--json]`. */
export async function factoryStatus(ctx: CliContext, opts: { json?: boolean }): Promise<number> {
  const remote = await RemoteCacheFactory.connect(ctx.config.factory.vmCacheEndpoint, ctx);
  try {
    const s = await remote.serverStatus();
    if (opts.json) {
      process.stdout.write(`${JSON.stringify(s, null, 2)}\n`);
      return 0;
    }
    process.stdout.write(
      `server pid ${s.pid} on ${ctx.config.factory.vmCacheEndpoint}: ${s.vmstatus.length}/${s.target} ready, ${s.booting} booting, ${s.leased} handing off, ${s.hits} served, ${s.bootFailures} failed boots\n`,
    );
    if (s.consecutiveFailures > 0) {
      process.stdout.write(
        `boots failing (${s.consecutiveFailures} in a row), next retry ${new Date(s.nextRetryUnixMs).toISOString()}: ${s.lastError}\n`,
      );
    }
    process.stdout.write(
      `${'ID'.padEnd(14)}${'PID'.padEnd(9)}${'CPUS'.padEnd(6)}${'MEM'.padEnd(7)}${'AGE'.padEnd(8)}STATE\n`,
    );
    for (const v of s.vmstatus) {
      process.stdout.write(
        `${v.id.padEnd(14)}${String(v.pid).padEnd(9)}${String(v.cpu).padEnd(6)}${String(v.memory).padEnd(7)}${`${Math.round(v.ageMs / 1000)}s`.padEnd(8)}${v.state}\n`,
      );
    }
    return 0;
  } finally {
    await remote.close();
  }
}

/** `vmcache factory destroy`: asks the server to quit and waits until it is gone. */
export async function factoryDestroy(ctx: CliContext): Promise<number> {
  const ep = ctx.config.factory.vmCacheEndpoint;
  let remote: RemoteCacheFactory;
  try {
    remote = await RemoteCacheFactory.connect(ep, ctx);
  } catch (err) {
    if (err instanceof VmcError && err.code === 'VMC_ERR_CACHE_UNAVAILABLE') {
      ctx.say(`factory: no server on ${ep}; nothing to destroy`);
      return 0;
    }
    throw err;
  }
  const { pid } = await remote.serverStatus();
  const who = identify(pid);
  await remote.quit();
  await remote.close();
  const deadline = ctx.clock.monotonic() + 60_000;
  while ((who && isAlive(who)) || existsSync(ep)) {
    if (ctx.clock.monotonic() > deadline)
      throw new VmcError('VMC_ERR_CACHE_UNAVAILABLE', `server pid ${pid} did not stop within 60 s`);
    await ctx.clock.sleep(50);
  }
  ctx.say(`factory: server pid ${pid} stopped`);
  return 0;
}
