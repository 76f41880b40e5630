import type { RuntimeConfig } from '../config/config.js';
import type { MissPolicy } from '../config/schema.js';
import { isVmcError } from '../errors.js';
import type { VmSpec } from '../hypervisor/types.js';
import type { VmDeps } from '../vm/vm.js';
import { DirectFactory } from './direct.js';
import { VmFactory } from './factory.js';
import { type FactoryMetrics, FallbackCounter } from './metrics.js';
import { RemoteCacheFactory } from './remote-cache.js';
import { TemplateFactory } from './template.js';

/** Which base strategy a selected factory uses. */
export type FactoryKind = 'cache' | 'template' | 'direct';

/**
 * The factory a client (`vm run`, `create`, `run`) uses, as Kata's runtime picks one from `[factory]`: the
 * cache server when `vm_cache_number > 0` and it answers; clones of the template when `enable_template` (the
 * first client makes the template when there is none); a direct boot otherwise. A missing server is not fatal
 * (Kata's behaviour): it warns and boots directly, except under `missPolicy: 'fail'`, which asked never to wait
 * for a boot. `useCache: false` forces a direct boot. `missPolicy` is what the cache server's GetBaseVM asks
 * for (absent: the server's `[cache] miss_policy`); it means nothing without a cache server.
 */
export async function selectFactory(
  config: RuntimeConfig,
  spec: VmSpec,
  deps: VmDeps & { metrics?: FactoryMetrics },
  useCache: boolean,
  opts: { missPolicy?: MissPolicy } = {},
): Promise<{ factory: VmFactory; kind: FactoryKind }> {
  // The composer's sink (see FallbackCounter): the caller's when it has one.
  const composer = { ...deps, metrics: deps.metrics ?? new FallbackCounter() };
  const direct = () => ({
    factory: new VmFactory(
      new DirectFactory(spec, deps, { agentTimeoutMs: config.agentDialTimeoutMs }),
      composer,
    ),
    kind: 'direct' as const,
  });
  const f = config.factory;
  if (!useCache) return direct();
  if (f.vmCacheNumber > 0) {
    try {
      return {
        factory: new VmFactory(
          await RemoteCacheFactory.connect(f.vmCacheEndpoint, deps, { missPolicy: opts.missPolicy }),
          composer,
        ),
        kind: 'cache',
      };
    } catch (err) {
      if (!isVmcError(err, 'VMC_ERR_CACHE_UNAVAILABLE') || opts.missPolicy === 'fail') throw err;
      deps.logger.warn({ endpoint: f.vmCacheEndpoint }, 'VM cache server unreachable; booting a VM directly');
      return direct();
    }
  }
  if (f.template) {
    // The first client creates the template when there is none, as Kata's runtime does (one at a time).
    const { factory, created } = await TemplateFactory.open(spec, f.templatePath, deps, {
      create: 'first-use',
    });
    if (created) deps.logger.warn({ templatePath: f.templatePath }, 'created the VM template (first use)');
    return { factory: new VmFactory(factory, composer), kind: 'template' };
  }
  return direct();
}
