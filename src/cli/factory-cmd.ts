import { existsSync } from 'node:fs';
import { type PoolConfig, poolTemplatePaths } from '../config/pools.js';
import { VmcError } from '../errors.js';
import type { FactoryBase } from '../factory/base.js';
import { DirectFactory } from '../factory/direct.js';
import { type PoolEntry, PoolSet } from '../factory/pool-set.js';
import { RemoteCacheFactory } from '../factory/remote-cache.js';
import { destroyTemplate, TemplateFactory, templateState } from '../factory/template.js';
import type { VmSpec } from '../hypervisor/types.js';
import { identify, isAlive } from '../platform/process.js';
import { CacheServer } from '../server/cache-server.js';
import { PromMetrics } from '../server/metrics.js';
import { sweepOrphans } from '../vm/sweep.js';
import { hostVmSpec } from './common.js';
import type { CliContext } from './context.js';

const MiB = 2 ** 20;

/**
 * `vmcache factory init`.
 * - `enable_template` only: creates the VM template (or reuses an intact one) and exits, as Kata does.
 * - `vm_cache_number > 0`: runs the VM cache server in the foreground until SIGINT/SIGTERM or a Quit RPC; with
 *   `enable_template` too, the pool is filled with template clones.
 */
export async function factoryInit(ctx: CliContext): Promise<number> {
  const { factory, cache } = ctx.config;
  if (factory.vmCacheNumber === 0 && !factory.template) {
    throw new VmcError(
      'VMC_ERR_CONFIG_INVALID',
      `${ctx.config.source ?? '(built-in defaults)'}: [factory] vm_cache_number is 0 and enable_template is false: nothing to set up; set vm_cache_number to the number of VMs to keep ready, or enable_template = true`,
    );
  }
  const spec = hostVmSpec(ctx);
  // VMs of a previous server that crashed (kill -9) have a dead owner: stop them before serving, except the
  // ones it had idle in its pool, which the server's start adopts (or stops, if they fail its checks).
  const swept = await sweepOrphans(ctx, { leavePooled: factory.vmCacheNumber > 0 });
  if (swept.reaped.length)
    ctx.say(`factory: stopped ${swept.reaped.length} VM(s) orphaned by a previous server`);
  if (factory.vmCacheNumber === 0) {
    // Templating alone: make the template (or reuse an intact one) and exit, as Kata does.
    await (await openTemplate(ctx, spec, factory.templatePath)).close();
    return 0;
  }
  const metrics = new PromMetrics();
  const entries: PoolEntry[] = [];
  const templates = poolTemplatePaths(ctx.config.cache.pools, factory.templatePath);
  try {
    for (const [i, p] of ctx.config.cache.pools.entries())
      entries.push(await poolEntry(ctx, spec, p, templates[i] ?? null));
  } catch (err) {
    await Promise.all(entries.map((e) => e.base.close()));
    throw err;
  }
  const pool = new PoolSet(
    entries,
    {
      pool: {
        maxParallelBoots: cache.maxParallelBoots,
        maxAgeMs: cache.maxAgeMs,
        healthIntervalMs: cache.healthIntervalMs,
        acquireTimeoutMs: cache.acquireTimeoutMs,
        retryInitialMs: cache.retryInitialMs,
        retryMaxMs: cache.retryMaxMs,
      },
      budgetMiB: cache.memoryBudgetMiB,
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
      missPolicy: cache.missPolicy,
    },
    ctx,
    metrics,
  );
  await server.start();
  const adopted = server.adoption?.adopted.length ?? 0;
  if (adopted) ctx.say(`factory: adopted ${adopted} idle VM(s) of a previous server (no reboot)`);
  const pools = ctx.config.cache.pools;
  ctx.say(
    `factory: VM cache serving ${factory.vmCacheEndpoint} (pid ${process.pid}), ${pools.map(poolLine).join('; ')}${cache.memoryBudgetMiB ? `; memory budget ${cache.memoryBudgetMiB} MiB` : ''}${cache.metricsEndpoint ? `; metrics on ${cache.metricsEndpoint}` : ''}`,
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

/** How `factory init` describes a pool. */
function poolLine(p: PoolConfig): string {
  const size = p.min === p.max ? `${p.min}` : `${p.min}–${p.max} (by demand)`;
  return `pool ${p.name}: ${size} ${p.template ? 'template clone(s)' : 'VM(s)'} of ${p.cpus} vCPU/${p.memoryMiB} MiB`;
}

/**
 * The template of `path` (made now when there is none, or reused when intact), as a factory of clones. A
 * half-made one is an error here (`strict`), as Kata's `factory init` makes it.
 */
async function openTemplate(ctx: CliContext, spec: VmSpec, path: string): Promise<FactoryBase> {
  const { factory, created } = await TemplateFactory.open(spec, path, ctx, { create: 'strict' });
  const st = templateState(path);
  const size = st.exists ? `${Math.round(st.sizeBytes / MiB)} MiB` : '?';
  ctx.say(`factory: ${created ? 'created the' : 'using the existing'} VM template in ${path} (${size})`);
  return factory;
}

/** One pool's base: clones of the template at `template` (of the pool's shape), or direct boots (null). */
async function poolEntry(
  ctx: CliContext,
  host: VmSpec,
  p: PoolConfig,
  template: string | null,
): Promise<PoolEntry> {
  const spec: VmSpec = { ...host, cpus: p.cpus, memoryMiB: p.memoryMiB };
  const base = template
    ? await openTemplate(ctx, spec, template)
    : new DirectFactory(spec, ctx, { agentTimeoutMs: ctx.config.agentDialTimeoutMs, warm: true });
  return { name: p.name, base, kind: template ? 'template' : 'direct', min: p.min, max: p.max };
}

/** `vmcache factory status [--json]`: the template (when enabled) and the cache server (when enabled). */
export async function factoryStatus(ctx: CliContext, opts: { json?: boolean }): Promise<number> {
  const f = ctx.config.factory;
  const template = f.template ? { path: f.templatePath, ...templateState(f.templatePath) } : null;
  if (f.vmCacheNumber === 0) {
    if (opts.json) process.stdout.write(`${JSON.stringify({ template }, null, 2)}\n`);
    else if (template) process.stdout.write(templateLine(template));
    else process.stdout.write('neither the VM cache nor VM templating is enabled in the configuration\n');
    return 0;
  }
  const remote = await RemoteCacheFactory.connect(f.vmCacheEndpoint, ctx);
  try {
    const s = await remote.serverStatus();
    if (opts.json) {
      process.stdout.write(`${JSON.stringify(template ? { ...s, template } : s, null, 2)}\n`);
      return 0;
    }
    if (template) process.stdout.write(templateLine(template));
    process.stdout.write(
      `server pid ${s.pid} on ${f.vmCacheEndpoint}: ${s.vmstatus.length}/${s.target} ready, ${s.booting} booting, ${s.leased} handing off, ${s.hits} served, ${s.missesWait + s.missesFail + s.missesCold} missed (wait ${s.missesWait}, fail ${s.missesFail}, cold ${s.missesCold}), ${s.bootFailures} failed boots${s.memoryBudgetMiB ? `, memory budget ${s.memoryBudgetMiB} MiB` : ''}\n`,
    );
    if (s.consecutiveFailures > 0) {
      process.stdout.write(
        `boots failing (${s.consecutiveFailures} in a row), next retry ${new Date(s.nextRetryUnixMs).toISOString()}: ${s.lastError}\n`,
      );
    }
    if (s.pools.length > 1 || s.pools.some((p) => p.min !== p.max)) {
      process.stdout.write(
        `${'POOL'.padEnd(14)}${'SHAPE'.padEnd(12)}${'BASE'.padEnd(10)}${'READY'.padEnd(7)}${'BOOT'.padEnd(6)}${'TARGET'.padEnd(16)}${'MIN-MAX'.padEnd(9)}${'HITS'.padEnd(6)}${'MISS w/f/c'.padEnd(12)}${'EVICT d/a/s'.padEnd(13)}${'DEMAND'.padEnd(9)}BOOT-MS\n`,
      );
      for (const p of s.pools) {
        process.stdout.write(
          `${p.name.padEnd(14)}${`${p.cpu}x${p.memory}`.padEnd(12)}${p.base.padEnd(10)}${String(p.ready).padEnd(7)}${String(p.booting).padEnd(6)}${`${p.target} (${p.targetReason})`.padEnd(16)}${`${p.min}-${p.max}`.padEnd(9)}${String(p.hits).padEnd(6)}${`${p.missesWait}/${p.missesFail}/${p.missesCold}`.padEnd(12)}${`${p.evictedDead}/${p.evictedAge}/${p.evictedShrink}`.padEnd(13)}${`${p.ratePerSecond.toFixed(3)}/s`.padEnd(9)}${Math.round(p.bootMs)}\n`,
        );
      }
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

function templateLine(t: { path: string } & ReturnType<typeof templateState>): string {
  return t.exists
    ? `template ${t.path}: ${Math.round(t.sizeBytes / MiB)} MiB, made ${new Date(t.meta.createdAt).toISOString()}\n`
    : `template ${t.path}: none (create it with 'vmcache factory init')\n`;
}

/**
 * `vmcache factory destroy`: asks the cache server to quit and waits until it is gone; removes the templates
 * (`[factory] template_path`, and each `[[cache.pool]]`'s of template clones).
 */
export async function factoryDestroy(ctx: CliContext): Promise<number> {
  const f = ctx.config.factory;
  if (f.vmCacheNumber > 0) await stopServer(ctx, f.vmCacheEndpoint);
  const paths = new Set(poolTemplatePaths(ctx.config.cache.pools, f.templatePath).filter((p) => p !== null));
  if (f.template) paths.add(f.templatePath);
  for (const path of paths) {
    const removed = await destroyTemplate(path, ctx);
    ctx.say(
      removed
        ? `factory: VM template ${path} removed (unmounted and deleted)`
        : `factory: no VM template to remove at ${path}`,
    );
  }
  return 0;
}

async function stopServer(ctx: CliContext, ep: string): Promise<void> {
  let remote: RemoteCacheFactory;
  try {
    remote = await RemoteCacheFactory.connect(ep, ctx);
  } catch (err) {
    if (err instanceof VmcError && err.code === 'VMC_ERR_CACHE_UNAVAILABLE') {
      ctx.say(`factory: no server on ${ep}`);
      return;
    }
    throw err;
  }
  const { pid } = await remote.serverStatus();
  const who = identify(pid);
  try {
    await remote.quit();
  } catch (err) {
    // The server may close the connection while its answer is in flight (seen with `Call cancelled` while it
    // stops large VMs): the wait below is what confirms the stop, and it has its own deadline.
    if (!(err instanceof VmcError)) throw err;
    ctx.logger.debug({ err: err.message }, 'Quit was not answered; waiting for the server to stop');
  }
  await remote.close();
  const deadline = ctx.clock.monotonic() + 60_000;
  while ((who && isAlive(who)) || existsSync(ep)) {
    if (ctx.clock.monotonic() > deadline)
      throw new VmcError('VMC_ERR_CACHE_UNAVAILABLE', `server pid ${pid} did not stop within 60 s`);
    await ctx.clock.sleep(50);
  }
  ctx.say(`factory: server pid ${pid} stopped`);
}
