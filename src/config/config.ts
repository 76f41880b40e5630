import { readFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { parse, TomlError } from 'smol-toml';
import { VmcError } from '../errors.js';
import { detectAccel } from '../hypervisor/qemu/accel.js';
import type { VmSpec } from '../hypervisor/types.js';
import { unixSocketPathProblem } from '../platform/unix-socket.js';
import { defaultVmSpec } from './defaults.js';
import { metricsEndpointProblem } from './endpoint.js';
import { LineIndex } from './lines.js';
import { type KeySpec, SCHEMA } from './schema.js';

/** The factory part (Kata's `factory.Config`). */
interface FactoryConfig {
  template: boolean;
  templatePath: string;
  vmCacheNumber: number;
  vmCacheEndpoint: string;
}

/** Tuning of the cache pool (vmcache's own `[cache]` section). */
interface CacheTuning {
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

/** A section of the schema, as maps: a name from the file can never find a prototype's member. */
interface SectionDef {
  keys: ReadonlyMap<string, KeySpec>;
  ignored: ReadonlySet<string>;
}
const SECTIONS: ReadonlyMap<string, SectionDef> = new Map(
  Object.entries(SCHEMA).map(([name, def]) => [
    name,
    { keys: new Map(Object.entries(def.keys as Record<string, KeySpec>)), ignored: new Set(def.ignored) },
  ]),
);

/** Unknown keys (or sections) listed by name in one report; the rest are counted. */
const MAX_LISTED = 10;
/** Names and values longer than this are shortened in messages (a fuzzer's 1 MiB key stays one short line). */
const MAX_SHOWN = 200;

function shorten(s: string, full: number): string {
  return s.length > MAX_SHOWN ? `${s.slice(0, MAX_SHOWN)}…(${full} characters)` : s;
}

/** A key or section name as TOML writes it: bare when it can be, else quoted (so newlines cannot fake lines). */
function shown(name: string): string {
  return shorten(/^[A-Za-z0-9_-]+$/.test(name) ? name : JSON.stringify(name), name.length);
}

function shownSection(section: string): string {
  return section.startsWith('hypervisor.') ? `hypervisor.${shown(section.slice(11))}` : shown(section);
}

function isTable(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof Date);
}

/** Prefixes of messages: `file:line: [section] key`, lines looked up in an index built once. */
class Locator {
  readonly #file: string;
  readonly #lines: LineIndex;
  constructor(file: string, text: string) {
    this.#file = file;
    this.#lines = new LineIndex(text);
  }
  line(section: string, key?: string): number | undefined {
    return this.#lines.line(section, key);
  }
  file(line: number | undefined): string {
    return `${this.#file}${line ? `:${line}` : ''}`;
  }
  at(section: string, key?: string): string {
    return `${this.file(this.line(section, key))}: [${shownSection(section)}]${key === undefined ? '' : ` ${shown(key)}`}`;
  }
}

function checkValue(spec: KeySpec, v: unknown, at: string): unknown {
  const bad = (expected: string) => {
    const got = JSON.stringify(v) ?? String(v);
    return new VmcError(
      'VMC_ERR_CONFIG_INVALID',
      `${at} must be ${expected}, got ${shorten(got, got.length)}`,
    );
  };
  switch (spec.type) {
    case 'bool':
      if (typeof v !== 'boolean') throw bad('true or false');
      return v;
    case 'int':
      if (typeof v !== 'number' || !Number.isInteger(v) || v < spec.min || v > spec.max)
        throw bad(`an integer from ${spec.min} to ${spec.max}`);
      return v;
    case 'string': {
      if (typeof v !== 'string') throw bad('a string');
      // Every string ends up in a path or an argv, which cannot hold NUL (fs and spawn throw a TypeError).
      if (v.includes('\0')) throw bad('a string without NUL characters');
      if (spec.pattern && !spec.pattern.test(v))
        throw bad(
          `one of ${spec.pattern.source
            .replace(/[\^$()]/g, '')
            .split('|')
            .join(', ')}`,
        );
      if (spec.absolute && !v.startsWith('/')) throw bad('an absolute path');
      const problem =
        spec.endpoint === 'unix'
          ? unixSocketPathProblem(v)
          : spec.endpoint === 'metrics'
            ? metricsEndpointProblem(v)
            : null;
      if (problem) throw bad(problem);
      return v;
    }
    case 'strings':
      if (!Array.isArray(v) || !v.every((s) => typeof s === 'string' && !s.includes('\0')))
        throw bad('an array of strings without NUL characters');
      return v;
  }
}

/** Flattens `{hypervisor: {qemu: {...}}}` into `{'hypervisor.qemu': {...}}` (own properties only). */
function sections(doc: Record<string, unknown>, loc: Locator): Map<string, unknown> {
  const out = new Map<string, unknown>();
  for (const [k, v] of Object.entries(doc)) {
    if (k !== 'hypervisor') {
      out.set(k, v);
      continue;
    }
    if (!isTable(v)) throw new VmcError('VMC_ERR_CONFIG_INVALID', `${loc.at(k)} must be a table`);
    for (const [h, hv] of Object.entries(v)) out.set(`hypervisor.${h}`, hv);
  }
  return out;
}

/**
 * One report for the unknown names of a section (or for unknown sections): a single one keeps the classic
 * `file:line: [section] key: unknown key, ignored`; many are listed with their lines, the first `MAX_LISTED`
 * by name and the rest counted, so a file with thousands of stray keys costs one line of log, not thousands.
 */
function unknownReport(
  loc: Locator,
  names: string[],
  section: string | null,
  line: (name: string) => number | undefined,
): string {
  const what = section === null ? 'section' : 'key';
  const label = (n: string) => (section === null ? `[${shownSection(n)}]` : shown(n));
  if (names.length === 1) {
    const n = names[0]!;
    return section === null
      ? `${loc.at(n)}: unknown section, ignored`
      : `${loc.at(section, n)}: unknown key, ignored`;
  }
  const listed = names.slice(0, MAX_LISTED).map((n) => {
    const l = line(n);
    return l ? `${label(n)} (line ${l})` : label(n);
  });
  const more = names.length > MAX_LISTED ? ` and ${names.length - MAX_LISTED} more` : '';
  const head = `${loc.file(line(names[0]!))}:${section === null ? '' : ` [${shownSection(section)}]`}`;
  return `${head} ${names.length} unknown ${what}s, ignored: ${listed.join(', ')}${more}`;
}

/** Validates a parsed document; throws VMC_ERR_CONFIG_INVALID naming file, line, section and key. */
export function validateConfig(
  doc: Record<string, unknown>,
  file: string,
  text: string,
): { values: Values; warnings: string[] } {
  const loc = new Locator(file, text);
  const values: Values = Object.create(null);
  for (const [name, def] of SECTIONS) {
    const v: Record<string, unknown> = Object.create(null);
    for (const [k, spec] of def.keys) v[k] = spec.default;
    values[name] = v;
  }
  const warnings: string[] = [];
  const unknownSections: string[] = [];
  for (const [section, body] of sections(doc, loc)) {
    const def = SECTIONS.get(section);
    if (!def) {
      if (section.startsWith('hypervisor.')) {
        throw new VmcError(
          'VMC_ERR_CONFIG_INVALID',
          `${loc.at(section)}: hypervisor ${shown(section.slice(11))} is not supported (only [hypervisor.qemu])`,
        );
      }
      unknownSections.push(section);
      continue;
    }
    if (!isTable(body)) throw new VmcError('VMC_ERR_CONFIG_INVALID', `${loc.at(section)} must be a table`);
    const unknown: string[] = [];
    for (const [key, v] of Object.entries(body)) {
      const spec = def.keys.get(key);
      if (spec) values[section]![key] = checkValue(spec, v, loc.at(section, key));
      else if (def.ignored.has(key))
        warnings.push(`${loc.at(section, key)}: Kata key not used by vmcache, ignored`);
      else unknown.push(key);
    }
    if (unknown.length) warnings.push(unknownReport(loc, unknown, section, (k) => loc.line(section, k)));
  }
  if (unknownSections.length) warnings.push(unknownReport(loc, unknownSections, null, (s) => loc.line(s)));
  const h = values['hypervisor.qemu']!;
  if ((h.default_maxvcpus as number) < (h.default_vcpus as number)) {
    throw new VmcError(
      'VMC_ERR_CONFIG_INVALID',
      `${loc.at('hypervisor.qemu', 'default_maxvcpus')} (${h.default_maxvcpus}) must be at least default_vcpus (${h.default_vcpus})`,
    );
  }
  if ((h.default_maxmemory as number) < (h.default_memory as number)) {
    throw new VmcError(
      'VMC_ERR_CONFIG_INVALID',
      `${loc.at('hypervisor.qemu', 'default_maxmemory')} (${h.default_maxmemory}) must be at least default_memory (${h.default_memory})`,
    );
  }
  const metrics = values.cache!.metrics_endpoint as string;
  if (metrics !== '' && metrics === values.factory!.vm_cache_endpoint) {
    throw new VmcError(
      'VMC_ERR_CONFIG_INVALID',
      `${loc.at('cache', 'metrics_endpoint')} must differ from [factory] vm_cache_endpoint (both are ${JSON.stringify(metrics)})`,
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
