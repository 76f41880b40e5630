import { readFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { parse, TomlError } from 'smol-toml';
import { VmcError } from '../errors.js';
import { detectAccel } from '../hypervisor/qemu/accel.js';
import type { VmSpec } from '../hypervisor/types.js';
import { defaultVmSpec } from './defaults.js';
import { type KeySpec, SCHEMA } from './schema.js';

/** The factory part (Kata's `factory.Config`). */
export interface FactoryConfig {
  template: boolean;
  templatePath: string;
  vmCacheNumber: number;
  vmCacheEndpoint: string;
}

/** Tuning of the cache pool (vmcache's own `[cache]` section). */
export interface CacheTuning {
  maxParallelBoots: number;
  maxAgeMs: number;
  healthIntervalMs: number;
  acquireTimeoutMs: number;
  leaseTimeoutMs: number;
  retryInitialMs: number;
  retryMaxMs: number;
  metricsEndpoint: string;
}

/** The validated, frozen configuration. */
export interface RuntimeConfig {
  /** The file it came from, or null for built-in defaults. */
  source: string | null;
  factory: FactoryConfig;
  vm: VmSpec;
  agentDialTimeoutMs: number;
  stateDir: string | null;
  cache: CacheTuning;
  /** Keys that were present but are Kata keys vmcache ignores, and unknown keys (both reported, not fatal). */
  warnings: string[];
}

type Values = Record<string, Record<string, unknown>>;

/** Line number of `key` inside `[section]` of a TOML text (best effort, for messages). */
function lineOf(text: string, section: string, key?: string): number | undefined {
  const lines = text.split('\n');
  let current = '';
  for (let i = 0; i < lines.length; i++) {
    const l = lines[i]!.trim();
    const h = /^\[\s*([^\]]+?)\s*\]/.exec(l);
    if (h) {
      current = h[1]!.replace(/\s*\.\s*/g, '.').replace(/"/g, '');
      if (key === undefined && current === section) return i + 1;
      continue;
    }
    if (
      key !== undefined &&
      current === section &&
      new RegExp(`^"?${key.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}"?\\s*=`).test(l)
    )
      return i + 1;
  }
  return undefined;
}

function where(file: string, text: string, section: string, key?: string): string {
  const line = lineOf(text, section, key);
  return `${file}${line ? `:${line}` : ''}: [${section}]${key ? ` ${key}` : ''}`;
}

function checkValue(spec: KeySpec, v: unknown, at: string): unknown {
  const bad = (expected: string) =>
    new VmcError('VMC_ERR_CONFIG_INVALID', `${at} must be ${expected}, got ${JSON.stringify(v)}`);
  switch (spec.type) {
    case 'bool':
      if (typeof v !== 'boolean') throw bad('true or false');
      return v;
    case 'int':
      if (typeof v !== 'number' || !Number.isInteger(v) || v < spec.min || v > spec.max)
        throw bad(`an integer from ${spec.min} to ${spec.max}`);
      return v;
    case 'string':
      if (typeof v !== 'string') throw bad('a string');
      if (spec.pattern && !spec.pattern.test(v))
        throw bad(
          `one of ${spec.pattern.source
            .replace(/[\^$()]/g, '')
            .split('|')
            .join(', ')}`,
        );
      if (spec.absolute && !v.startsWith('/')) throw bad('an absolute path');
      return v;
    case 'strings':
      if (!Array.isArray(v) || !v.every((s) => typeof s === 'string')) throw bad('an array of strings');
      return v;
  }
}

/** Flattens `{hypervisor: {qemu: {...}}}` into `{'hypervisor.qemu': {...}}`. */
function sections(doc: Record<string, unknown>): Map<string, Record<string, unknown>> {
  const out = new Map<string, Record<string, unknown>>();
  for (const [k, v] of Object.entries(doc)) {
    if (k === 'hypervisor' && v && typeof v === 'object') {
      for (const [h, hv] of Object.entries(v as Record<string, unknown>))
        out.set(`hypervisor.${h}`, hv as Record<string, unknown>);
    } else out.set(k, v as Record<string, unknown>);
  }
  return out;
}

/** Validates a parsed document; throws VMC_ERR_CONFIG_INVALID naming file, line, section and key. */
export function validateConfig(
  doc: Record<string, unknown>,
  file: string,
  text: string,
): { values: Values; warnings: string[] } {
  const values: Values = {};
  const warnings: string[] = [];
  for (const [name, def] of Object.entries(SCHEMA)) {
    values[name] = Object.fromEntries(Object.entries(def.keys).map(([k, s]) => [k, s.default]));
  }
  for (const [section, body] of sections(doc)) {
    const def = (SCHEMA as Record<string, { keys: Record<string, KeySpec>; ignored: string[] }>)[section];
    if (!def) {
      if (section.startsWith('hypervisor.')) {
        throw new VmcError(
          'VMC_ERR_CONFIG_INVALID',
          `${where(file, text, section)}: hypervisor ${section.slice(11)} is not supported (only [hypervisor.qemu])`,
        );
      }
      warnings.push(`${where(file, text, section)}: unknown section, ignored`);
      continue;
    }
    if (typeof body !== 'object' || body === null || Array.isArray(body)) {
      throw new VmcError('VMC_ERR_CONFIG_INVALID', `${where(file, text, section)} must be a table`);
    }
    for (const [key, v] of Object.entries(body)) {
      const spec = def.keys[key];
      if (!spec) {
        warnings.push(
          `${where(file, text, section, key)}: ${def.ignored.includes(key) ? 'Kata key not used by vmcache, ignored' : 'unknown key, ignored'}`,
        );
        continue;
      }
      values[section]![key] = checkValue(spec, v, where(file, text, section, key));
    }
  }
  const h = values['hypervisor.qemu']!;
  if ((h.default_maxvcpus as number) < (h.default_vcpus as number)) {
    throw new VmcError(
      'VMC_ERR_CONFIG_INVALID',
      `${where(file, text, 'hypervisor.qemu', 'default_maxvcpus')} (${h.default_maxvcpus}) must be at least default_vcpus (${h.default_vcpus})`,
    );
  }
  if ((h.default_maxmemory as number) < (h.default_memory as number)) {
    throw new VmcError(
      'VMC_ERR_CONFIG_INVALID',
      `${where(file, text, 'hypervisor.qemu', 'default_maxmemory')} (${h.default_maxmemory}) must be at least default_memory (${h.default_memory})`,
    );
  }
  return { values, warnings };
}

/** Builds the runtime configuration from validated values. */
export function toRuntimeConfig(
  values: Values,
  source: string | null,
  imageDir: string,
  warnings: string[],
): RuntimeConfig {
  const f = values.factory!;
  const h = values['hypervisor.qemu']!;
  const c = values.cache!;
  const accel = h.accel === 'auto' ? detectAccel().accel : (h.accel as 'kvm' | 'tcg');
  const base = defaultVmSpec(imageDir, accel, h.path as string);
  const vm: VmSpec = {
    ...base,
    machine: h.machine_type as string,
    cpuModel: (h.cpu_model as string) || base.cpuModel,
    cpus: h.default_vcpus as number,
    maxCpus: h.default_maxvcpus as number,
    memoryMiB: h.default_memory as number,
    memorySlots: h.memory_slots as number,
    maxMemoryMiB: h.default_maxmemory as number,
    kernel: (h.kernel as string) || base.kernel,
    initrd: (h.initrd as string) || base.initrd,
    rootDisk: (h.image as string) || base.rootDisk,
    kernelParams: (h.kernel_params as string).split(/\s+/).filter(Boolean),
    tcgTbSizeMiB: h.tcg_tb_size as number,
  };
  const parallel = (c.max_parallel_boots as number) || Math.max(1, Math.floor(cpus().length / 2));
  const cfg: RuntimeConfig = {
    source,
    factory: {
      template: f.enable_template as boolean,
      templatePath: f.template_path as string,
      vmCacheNumber: f.vm_cache_number as number,
      vmCacheEndpoint: f.vm_cache_endpoint as string,
    },
    vm,
    agentDialTimeoutMs: (values.agent!.dial_timeout as number) * 1000,
    stateDir: (values.runtime!.state_dir as string) || null,
    cache: {
      maxParallelBoots: parallel,
      maxAgeMs: (c.max_age as number) * 1000,
      healthIntervalMs: (c.health_interval as number) * 1000,
      acquireTimeoutMs: (c.acquire_timeout as number) * 1000,
      leaseTimeoutMs: (c.lease_timeout as number) * 1000,
      retryInitialMs: (c.retry_initial as number) * 1000,
      retryMaxMs: (c.retry_max as number) * 1000,
      metricsEndpoint: c.metrics_endpoint as string,
    },
    warnings,
  };
  return deepFreeze(cfg);
}

/** Parses TOML text; syntax errors name the file, line and column. */
export function parseConfigText(text: string, file: string, imageDir: string): RuntimeConfig {
  let doc: Record<string, unknown>;
  try {
    doc = parse(text) as Record<string, unknown>;
  } catch (e) {
    if (e instanceof TomlError) {
      throw new VmcError(
        'VMC_ERR_CONFIG_INVALID',
        `${file}:${e.line}:${e.column}: ${e.message.split('\n')[0]}`,
        { cause: e },
      );
    }
    throw e;
  }
  const { values, warnings } = validateConfig(doc, file, text);
  return toRuntimeConfig(values, file, imageDir, warnings);
}

/** Loads `file`, or the built-in defaults when `file` is null. */
export function loadConfig(file: string | null, imageDir: string): RuntimeConfig {
  if (file === null) {
    const { values } = validateConfig({}, '(defaults)', '');
    return toRuntimeConfig(values, null, imageDir, []);
  }
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new VmcError(
      'VMC_ERR_CONFIG_INVALID',
      `cannot read configuration ${file}: ${(e as Error).message}`,
      { cause: e },
    );
  }
  return parseConfigText(text, file, imageDir);
}

function deepFreeze<T>(o: T): T {
  if (o && typeof o === 'object') {
    for (const v of Object.values(o)) deepFreeze(v);
    Object.freeze(o);
  }
  return o;
}
