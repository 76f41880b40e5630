import { VmcError } from '../errors.js';
import { type KeySpec, POOL_KEYS, POOL_REQUIRED } from './schema.js';

/**
 * Pools per VM shape (`[[cache.pool]]`, issue 15). Kata's cache is one fixed pool of the `[hypervisor.qemu]`
 * shape, sized by `[factory] vm_cache_number`; vmcache keeps that as the default pool and adds a pool per listed
 * shape, each sized by demand between its `min` and `max`:
 *
 *     [[cache.pool]]
 *     vcpus = 2
 *     memory = 1024
 *     min = 1
 *     max = 4
 */

/** One pool as configured (after defaults). */
export interface PoolConfig {
  name: string;
  cpus: number;
  memoryMiB: number;
  min: number;
  max: number;
  /** Filled with template clones (else direct boots). */
  template: boolean;
}

/** At most this many pools: each costs a refill loop and a metrics series per counter. */
export const MAX_POOLS = 16;

/** Name of the pool that `vm_cache_number` sizes when no `[[cache.pool]]` has the default shape. */
export const DEFAULT_POOL_NAME = 'default';

/** What the pool checks need from config.ts (which owns messages and value checks). */
export interface PoolCheckContext {
  /** `file:line: [[cache.pool]] #N key` for the Nth table (1-based), or of the table itself. */
  at(index: number, key?: string): string;
  /** config.ts's checkValue: the value against its spec, or a VMC_ERR_CONFIG_INVALID naming `at`. */
  check(spec: KeySpec, v: unknown, at: string): unknown;
}

/** A pool as listed: `template` unset means `[factory] enable_template` (known once the whole file is read). */
export type ListedPool = Omit<PoolConfig, 'template'> & { template?: boolean };

const invalid = (msg: string) => new VmcError('VMC_ERR_CONFIG_INVALID', msg);
const KEYS: ReadonlyMap<string, KeySpec> = new Map(Object.entries(POOL_KEYS));

function isTable(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof Date);
}

/**
 * Validates the `[[cache.pool]]` array (the value smol-toml parsed for `cache.pool`): every table's keys known
 * and in range, `vcpus` and `memory` set, `min ≤ max`, names and shapes unique. Host limits (hot-plug maxima,
 * the memory budget) are checked by {@link resolvePools}, once the host values are known.
 */
export function validatePools(raw: unknown, ctx: PoolCheckContext): ListedPool[] {
  if (!Array.isArray(raw))
    throw invalid(`${ctx.at(1)} must be written as [[cache.pool]] tables (an array of tables)`);
  if (raw.length > MAX_POOLS)
    throw invalid(`${ctx.at(MAX_POOLS + 1)}: at most ${MAX_POOLS} pools, got ${raw.length}`);
  const pools: ListedPool[] = [];
  const byName = new Map<string, number>();
  const byShape = new Map<string, number>();
  raw.forEach((t, i) => {
    const n = i + 1;
    if (!isTable(t)) throw invalid(`${ctx.at(n)} must be a table`);
    const v = new Map<string, unknown>();
    for (const [key, value] of Object.entries(t)) {
      const spec = KEYS.get(key);
      if (!spec) throw invalid(`${ctx.at(n, key)}: unknown key; a pool has ${[...KEYS.keys()].join(', ')}`);
      v.set(key, ctx.check(spec, value, ctx.at(n, key)));
    }
    for (const key of POOL_REQUIRED) if (!v.has(key)) throw invalid(`${ctx.at(n)}: ${key} is required`);
    const cpus = v.get('vcpus') as number;
    const memoryMiB = v.get('memory') as number;
    const min = (v.get('min') as number | undefined) ?? 0;
    const max = (v.get('max') as number | undefined) ?? min;
    if (max < min) throw invalid(`${ctx.at(n, 'max')} (${max}) must be at least min (${min})`);
    if (max === 0) throw invalid(`${ctx.at(n, 'max')} is 0: a pool that may never keep a VM; set max ≥ 1`);
    const name = (v.get('name') as string | undefined) || `${cpus}x${memoryMiB}`;
    const shape = `${cpus} vCPU/${memoryMiB} MiB`;
    const sameName = byName.get(name);
    if (sameName !== undefined)
      throw invalid(`${ctx.at(n, 'name')}: pool name ${name} is also pool #${sameName}'s`);
    const sameShape = byShape.get(shape);
    if (sameShape !== undefined)
      throw invalid(`${ctx.at(n)}: shape ${shape} is also pool #${sameShape}'s (one pool per shape)`);
    byName.set(name, n);
    byShape.set(shape, n);
    pools.push({
      name,
      cpus,
      memoryMiB,
      min,
      max,
      template: v.get('template') as boolean | undefined,
    });
  });
  return pools;
}

/** What {@link resolvePools} checks the pools against. */
export interface PoolLimits {
  /** `[factory] vm_cache_number`: the default pool's fixed size; 0 turns the cache off. */
  vmCacheNumber: number;
  /** `[hypervisor.qemu]` boot shape (the default pool's) and hot-plug maxima. */
  cpus: number;
  memoryMiB: number;
  maxCpus: number;
  maxMemoryMiB: number;
  template: boolean;
  /** `[cache] memory_budget`, MiB (0: none). */
  budgetMiB: number;
  /** Where each rule's key is, for messages. */
  at(index: number, key?: string): string;
  atKey(section: string, key: string): string;
}

/**
 * The pools a cache server runs, default pool first: the listed ones, plus (when none of them has the
 * `[hypervisor.qemu]` shape) a fixed pool of that shape and of `vm_cache_number` VMs, as Kata's. Every pool's VMs
 * share the boot-relevant fields (kernel, image, hot-plug maxima), so a VM of any pool may be grown to a request.
 */
export function resolvePools(listedPools: ListedPool[], l: PoolLimits): PoolConfig[] {
  const listed = listedPools.map((p) => ({ ...p, template: p.template ?? l.template }));
  if (l.vmCacheNumber === 0) {
    if (listed.length)
      throw invalid(
        `${l.at(1)}: pools are listed but ${l.atKey('factory', 'vm_cache_number')} is 0, which turns the cache off; set it to the default pool's size (≥ 1)`,
      );
    return [];
  }
  listed.forEach((p, i) => {
    if (p.cpus > l.maxCpus)
      throw invalid(
        `${l.at(i + 1, 'vcpus')} (${p.cpus}) is above [hypervisor.qemu] default_maxvcpus (${l.maxCpus}): every pool's VMs share the hot-plug limits`,
      );
    if (p.memoryMiB > l.maxMemoryMiB)
      throw invalid(
        `${l.at(i + 1, 'memory')} (${p.memoryMiB}) is above [hypervisor.qemu] default_maxmemory (${l.maxMemoryMiB} MiB): every pool's VMs share the hot-plug limits`,
      );
  });
  const isDefault = (p: PoolConfig) => p.cpus === l.cpus && p.memoryMiB === l.memoryMiB;
  const own = listed.find(isDefault);
  const pools = own
    ? [own, ...listed.filter((p) => p !== own)]
    : [
        {
          name: listed.some((p) => p.name === DEFAULT_POOL_NAME)
            ? `${l.cpus}x${l.memoryMiB}`
            : DEFAULT_POOL_NAME,
          cpus: l.cpus,
          memoryMiB: l.memoryMiB,
          min: l.vmCacheNumber,
          max: l.vmCacheNumber,
          template: l.template,
        },
        ...listed,
      ];
  if (l.budgetMiB > 0) {
    const mins = pools.reduce((s, p) => s + p.min * p.memoryMiB, 0);
    if (mins > l.budgetMiB)
      throw invalid(
        `${l.atKey('cache', 'memory_budget')} (${l.budgetMiB} MiB) is below what the pools' minimums keep (${mins} MiB: ${pools.map((p) => `${p.name} ${p.min}×${p.memoryMiB}`).join(', ')})`,
      );
  }
  return pools;
}

/**
 * Where each pool's template is, for the pools {@link resolvePools} returns (default pool first): the default
 * pool's is `[factory] template_path` (Kata's); another pool's is beside it, named after the pool (a template is
 * one shape: its memory size is in the snapshot). Pools of direct boots have none.
 */
export function poolTemplatePaths(pools: PoolConfig[], templatePath: string): Array<string | null> {
  return pools.map((p, i) => (!p.template ? null : i === 0 ? templatePath : `${templatePath}-${p.name}`));
}
