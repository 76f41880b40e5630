import { existsSync, readFileSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { dirname } from 'node:path';
import { distance } from 'fastest-levenshtein';
import { parse, TomlError } from 'smol-toml';
import { VmcError } from '../errors.js';
import { readManifest } from '../guest/image/manifest.js';
import { detectAccel } from '../hypervisor/qemu/accel.js';
import type { VmSpec } from '../hypervisor/types.js';
import { unixSocketPathProblem } from '../platform/unix-socket.js';
import { defaultVmSpec } from './defaults.js';
import { metricsEndpointProblem } from './endpoint.js';
import { type IgnoredReason, ignoredReason, KATA_IGNORED, REASON_TEXT } from './kata-keys.js';
import { LineIndex } from './lines.js';
import { type ListedPool, type PoolConfig, resolvePools, validatePools } from './pools.js';
import { type KeySpec, type MissPolicy, SCHEMA } from './schema.js';

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
  /** The server's default for requests that do not choose (Kata's clients never do). */
  missPolicy: MissPolicy;
  /**
   * The pools a cache server runs, default pool (the `[hypervisor.qemu]` shape) first; empty when the cache is
   * off (`vm_cache_number` 0). See pools.ts.
   */
  pools: PoolConfig[];
  /** `[cache] memory_budget`, MiB over all pools' ready and booting VMs (0: none). */
  memoryBudgetMiB: number;
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

/** A section of the schema, as a map: a name from the file can never find a prototype's member. */
const SECTIONS: ReadonlyMap<string, ReadonlyMap<string, KeySpec>> = new Map(
  Object.entries(SCHEMA).map(([name, def]) => [
    name,
    new Map(Object.entries(def.keys as Record<string, KeySpec>)),
  ]),
);

/**
 * Kata's other spellings of a section: runtime-go's agent section is `[agent.kata]`, and runtime-rs places the
 * template options under `[hypervisor.qemu.factory]`. Both read the same keys as vmcache's spelling.
 */
const ALIASES: ReadonlyMap<string, string> = new Map([
  ['agent.kata', 'agent'],
  ['hypervisor.qemu.factory', 'factory'],
]);

/** Unknown keys (or sections) listed by name in the warning; the rest are counted. */
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
  if (ALIASES.has(section)) return section;
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
  get name(): string {
    return this.#file;
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
  /** The Nth `[[cache.pool]]` table (1-based; lines.ts indexes it as section `cache.pool[N]`), or a key of it. */
  atPool(n: number, key?: string): string {
    const line = this.line(`cache.pool[${n}]`, key) ?? this.line('cache', 'pool');
    return `${this.file(line)}: [[cache.pool]] #${n}${key === undefined ? '' : ` ${shown(key)}`}`;
  }
}

function hostRange(spec: Extract<KeySpec, { type: 'int' }>): string {
  const base = `an integer from ${spec.min} to ${spec.max}`;
  if (spec.host === 'cpus') return `${base}, 0 (the default) or negative (all host cores)`;
  if (spec.host === 'maxcpus') return `${base} or 0 (the host's cores)`;
  if (spec.host === 'memory') return `${base} or 0 (the host's memory)`;
  return base;
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
    case 'int': {
      if (typeof v !== 'number' || !Number.isSafeInteger(v)) throw bad(hostRange(spec));
      // Kata's rule: 0 means the host's maximum (for vCPUs at boot, Kata's default of 1), a negative vCPU
      // count all host cores. They are resolved against the host in toRuntimeConfig.
      const hostValue = spec.host !== undefined && (v === 0 || (v < 0 && spec.host === 'cpus'));
      if (!hostValue && (v < spec.min || v > spec.max)) throw bad(hostRange(spec));
      return v;
    }
    case 'string': {
      if (typeof v !== 'string') throw bad('a string');
      // Every string ends up in a path or an argv, which cannot hold NUL (fs and spawn throw a TypeError).
      if (v.includes('\0')) throw bad('a string without NUL characters');
      if (spec.pattern && !spec.pattern.test(v))
        throw bad(
          spec.patternText ??
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

/**
 * The sections of a document by the name they are written under: `{hypervisor: {qemu: {...}}}` becomes
 * `hypervisor.qemu`, `[agent.kata]` and `[hypervisor.qemu.factory]` are split out (own properties only).
 */
function sections(doc: Record<string, unknown>, loc: Locator): Array<[string, unknown]> {
  const out: Array<[string, unknown]> = [];
  const split = (name: string, body: unknown, sub: string) => {
    if (!isTable(body) || !Object.hasOwn(body, sub)) {
      out.push([name, body]);
      return;
    }
    const { [sub]: inner, ...rest } = body;
    if (!isTable(inner))
      throw new VmcError('VMC_ERR_CONFIG_INVALID', `${loc.at(`${name}.${sub}`)} must be a table`);
    out.push([name, rest], [`${name}.${sub}`, inner]);
  };
  for (const [k, v] of Object.entries(doc)) {
    if (k === 'agent') split(k, v, 'kata');
    else if (k !== 'hypervisor') out.push([k, v]);
    else {
      if (!isTable(v)) throw new VmcError('VMC_ERR_CONFIG_INVALID', `${loc.at(k)} must be a table`);
      for (const [h, hv] of Object.entries(v)) {
        if (h === 'qemu') split('hypervisor.qemu', hv, 'factory');
        else out.push([`hypervisor.${h}`, hv]);
      }
    }
  }
  return out;
}

/** A name vmcache does not act on: a Kata key it ignores (with the reason), an unknown key or section. */
interface NotActedOn {
  section: string;
  key?: string;
  why: IgnoredReason | 'unknown';
}

/**
 * The closest of `candidates` to a name that is not one of them, when near enough to be a typo: one edit for
 * names of 4 to 6 characters, two from 7 (`vm_cache_numbr` → `vm_cache_number`; a swap of two letters, as in
 * `factroy`, is two edits for Levenshtein's distance). Names far apart in length are never compared (a fuzzer's
 * 1 MiB key costs nothing).
 */
function likelyMeant(name: string, candidates: Iterable<string>): string | undefined {
  let best: string | undefined;
  let bestDistance = Number.POSITIVE_INFINITY;
  for (const c of candidates) {
    const allowed = c.length >= 7 ? 2 : c.length >= 4 ? 1 : 0;
    if (allowed === 0 || Math.abs(c.length - name.length) > allowed) continue;
    const d = distance(name, c);
    if (d <= allowed && d < bestDistance) {
      best = c;
      bestDistance = d;
    }
  }
  return best;
}

/**
 * One warning for every name that has no effect, grouped by why: covered by the VM boundary, not applicable to
 * vmcache's guest, unknown (these with their lines, the first `MAX_LISTED` by name and the rest counted, so a
 * file with thousands of stray keys costs one line of log, not thousands).
 */
function notActedOnReport(loc: Locator, names: NotActedOn[]): string {
  const list = (entries: NotActedOn[], withLines: boolean) => {
    let last: string | undefined;
    return entries
      .map((e) => {
        const line = withLines ? loc.line(e.section, e.key) : undefined;
        const at = line ? ` (line ${line})` : '';
        if (e.key === undefined) {
          last = undefined;
          return `[${shownSection(e.section)}]${at}`;
        }
        const head = last === e.section ? '' : `[${shownSection(e.section)}] `;
        last = e.section;
        return `${head}${shown(e.key)}${at}`;
      })
      .join(', ');
  };
  const groups: string[] = [];
  for (const why of ['boundary', 'guest'] as const) {
    const entries = names.filter((n) => n.why === why);
    if (entries.length) groups.push(`${REASON_TEXT[why]}: ${list(entries, false)}`);
  }
  const unknown = names.filter((n) => n.why === 'unknown');
  if (unknown.length) {
    const more = unknown.length > MAX_LISTED ? ` and ${unknown.length - MAX_LISTED} more` : '';
    groups.push(`unknown: ${list(unknown.slice(0, MAX_LISTED), true)}${more}`);
  }
  const n = names.length;
  return `${loc.name}: ${n} ${n === 1 ? 'name' : 'names'} not acted on by vmcache, ignored; ${groups.join('; ')}`;
}

/** Validates a parsed document; throws VMC_ERR_CONFIG_INVALID naming file, line, section and key. */
export function validateConfig(
  doc: Record<string, unknown>,
  file: string,
  text: string,
): { values: Values; warnings: string[]; loc: Locator } {
  const loc = new Locator(file, text);
  const values: Values = Object.create(null);
  for (const [name, keys] of SECTIONS) {
    const v: Record<string, unknown> = Object.create(null);
    for (const [k, spec] of keys) v[k] = spec.default;
    values[name] = v;
  }
  values.cache!.pool = [] satisfies ListedPool[];
  const notActedOn: NotActedOn[] = [];
  /** Where each key was set, so that a key set under both spellings of a section is refused. */
  const setIn = new Map<string, string>();
  for (const [section, body] of sections(doc, loc)) {
    const target = ALIASES.get(section) ?? section;
    const keys = SECTIONS.get(target);
    if (!keys) {
      if (section.startsWith('hypervisor.')) {
        throw new VmcError(
          'VMC_ERR_CONFIG_INVALID',
          `${loc.at(section)}: hypervisor ${shown(section.slice(11))} is not supported (only [hypervisor.qemu])`,
        );
      }
      const meant = likelyMeant(section, [...SECTIONS.keys(), ...ALIASES.keys()]);
      if (meant)
        throw new VmcError(
          'VMC_ERR_CONFIG_INVALID',
          `${loc.at(section)}: unknown section; did you mean [${meant}]?`,
        );
      notActedOn.push({ section, why: 'unknown' });
      continue;
    }
    if (!isTable(body)) throw new VmcError('VMC_ERR_CONFIG_INVALID', `${loc.at(section)} must be a table`);
    for (const [key, v] of Object.entries(body)) {
      if (target === 'cache' && key === 'pool') {
        values.cache!.pool = validatePools(v, {
          at: (n, k) => loc.atPool(n, k),
          check: checkValue,
        });
        continue;
      }
      const spec = keys.get(key);
      if (spec) {
        const other = setIn.get(`${target}\0${key}`);
        if (other !== undefined) {
          throw new VmcError(
            'VMC_ERR_CONFIG_INVALID',
            `${loc.at(section, key)} is also set in [${shownSection(other)}] (line ${loc.line(other, key)}): set it once`,
          );
        }
        setIn.set(`${target}\0${key}`, section);
        values[target]![key] = checkValue(spec, v, loc.at(section, key));
        continue;
      }
      const why = ignoredReason(target, key);
      if (why) {
        notActedOn.push({ section, key, why });
        continue;
      }
      // A misspelt key is silently ignored by Kata, which can turn the cache off: here it is an error.
      const meant = likelyMeant(key, [...keys.keys(), ...(KATA_IGNORED.get(target)?.keys() ?? [])]);
      if (meant) {
        throw new VmcError(
          'VMC_ERR_CONFIG_INVALID',
          `${loc.at(section, key)}: unknown key; did you mean ${meant}?`,
        );
      }
      notActedOn.push({ section, key, why: 'unknown' });
    }
  }
  const warnings = notActedOn.length ? [notActedOnReport(loc, notActedOn)] : [];
  const at = (key: string) => loc.at(setIn.get(`hypervisor.qemu\0${key}`) ?? 'hypervisor.qemu', key);
  const h = values['hypervisor.qemu']!;
  const machine = h.machine_type as string;
  if (machine !== 'q35') {
    throw new VmcError(
      'VMC_ERR_CONFIG_INVALID',
      `${at('machine_type')} ${JSON.stringify(shorten(machine, machine.length))} is not supported: vmcache needs q35, ` +
        'for memory and vCPU hot-plug (a cached VM grows to the size asked for), vmgenid (a clone reseeds its ' +
        'RNG) and templating (microvm has neither hot-plug nor vmgenid; pc has no PCIe hot-plug)',
    );
  }
  const positive = (k: string) => (h[k] as number) > 0;
  if (
    positive('default_maxvcpus') &&
    positive('default_vcpus') &&
    (h.default_maxvcpus as number) < (h.default_vcpus as number)
  ) {
    throw new VmcError(
      'VMC_ERR_CONFIG_INVALID',
      `${at('default_maxvcpus')} (${h.default_maxvcpus}) must be at least default_vcpus (${h.default_vcpus})`,
    );
  }
  if (positive('default_maxmemory') && (h.default_maxmemory as number) < (h.default_memory as number)) {
    throw new VmcError(
      'VMC_ERR_CONFIG_INVALID',
      `${at('default_maxmemory')} (${h.default_maxmemory}) must be at least default_memory (${h.default_memory})`,
    );
  }
  const metrics = values.cache!.metrics_endpoint as string;
  if (metrics !== '' && metrics === values.factory!.vm_cache_endpoint) {
    throw new VmcError(
      'VMC_ERR_CONFIG_INVALID',
      `${loc.at('cache', 'metrics_endpoint')} must differ from [factory] vm_cache_endpoint (both are ${JSON.stringify(metrics)})`,
    );
  }
  return { values, warnings, loc };
}

/** What the host offers, for Kata's "0 means the host's maximum" values. */
export interface HostLimits {
  cpus: number;
  memoryMiB: number;
}

/** This machine's cores and memory. */
export function hostLimits(): HostLimits {
  return { cpus: cpus().length, memoryMiB: Math.floor(totalmem() / 2 ** 20) };
}

/** A vCPU or MiB count after Kata's rule (0 or negative: the host's maximum, within vmcache's bound). */
function resolveHostValue(key: string, v: number, host: HostLimits): number {
  const spec = SECTIONS.get('hypervisor.qemu')!.get(key) as Extract<KeySpec, { type: 'int' }>;
  if (v > 0) return v;
  if (spec.host === 'cpus' && v === 0) return spec.default;
  return Math.min(spec.host === 'memory' ? host.memoryMiB : host.cpus, spec.max);
}

/**
 * The guest kernel, initramfs and root disk. A Kata file names Kata's own guest assets (e.g.
 * `/opt/kata/share/kata-containers/vmlinux.container`), which carry Kata's agent, not vmcache's: a configured
 * path is used only when it is a vmcache guest image (its `manifest.json` beside it); otherwise all three come
 * from vmcache's own image and one warning names the keys.
 */
function guestAssets(
  h: Record<string, unknown>,
  base: VmSpec,
  source: string | null,
  imageDir: string,
): { kernel: string; initrd: string; rootDisk: string; warning?: string } {
  const keys = [
    ['kernel', 'kernel'],
    ['initrd', 'initrd'],
    ['image', 'rootDisk'],
  ] as const;
  const foreign: string[] = [];
  for (const [key] of keys) {
    const path = h[key] as string;
    if (!path) continue;
    if (!existsSync(path)) foreign.push(`${key} ${path} (missing)`);
    else if (!readManifest(dirname(path)))
      foreign.push(`${key} ${path} (no vmcache manifest.json beside it)`);
  }
  if (foreign.length) {
    return {
      kernel: base.kernel,
      initrd: base.initrd,
      rootDisk: base.rootDisk,
      warning:
        `${source ?? '(defaults)'}: [hypervisor.qemu] ${foreign.join(', ')}: not a vmcache guest image ` +
        `(Kata's guest assets carry Kata's agent); using vmcache's own image in ${imageDir}`,
    };
  }
  const pick = (key: 'kernel' | 'initrd' | 'image', field: 'kernel' | 'initrd' | 'rootDisk') =>
    (h[key] as string) || base[field];
  return {
    kernel: pick('kernel', 'kernel'),
    initrd: pick('initrd', 'initrd'),
    rootDisk: pick('image', 'rootDisk'),
  };
}

/**
 * The QEMU binary: Kata's file names Kata's own build (`/opt/kata/bin/qemu-system-x86_64`); when an absolute
 * path is missing, the distribution's QEMU on PATH is used and a warning says so.
 */
function qemuBinary(path: string, source: string | null): { path: string; warning?: string } {
  if (!path.startsWith('/') || existsSync(path)) return { path };
  const fallback = SECTIONS.get('hypervisor.qemu')!.get('path')!.default as string;
  return {
    path: fallback,
    warning: `${source ?? '(defaults)'}: [hypervisor.qemu] path ${path} is missing; using ${fallback} from PATH`,
  };
}

/** Builds the runtime configuration from validated values. */
export function toRuntimeConfig(
  values: Values,
  source: string | null,
  imageDir: string,
  warnings: string[],
  host: HostLimits = hostLimits(),
  loc: Locator = new Locator(source ?? '(defaults)', ''),
): RuntimeConfig {
  const f = values.factory!;
  const h = values['hypervisor.qemu']!;
  const c = values.cache!;
  const accel = h.accel === 'auto' ? detectAccel().accel : (h.accel as 'kvm' | 'tcg');
  const qemu = qemuBinary(h.path as string, source);
  const base = defaultVmSpec(imageDir, accel, qemu.path);
  const cpusAtBoot = resolveHostValue('default_vcpus', h.default_vcpus as number, host);
  const memoryMiB = h.default_memory as number;
  const assets = guestAssets(h, base, source, imageDir);
  const vm: VmSpec = {
    ...base,
    machine: h.machine_type as string,
    cpuModel: (h.cpu_model as string) || base.cpuModel,
    cpus: cpusAtBoot,
    maxCpus: Math.max(cpusAtBoot, resolveHostValue('default_maxvcpus', h.default_maxvcpus as number, host)),
    memoryMiB,
    memorySlots: h.memory_slots as number,
    maxMemoryMiB: Math.max(
      memoryMiB,
      resolveHostValue('default_maxmemory', h.default_maxmemory as number, host),
    ),
    kernel: assets.kernel,
    initrd: assets.initrd,
    rootDisk: assets.rootDisk,
    kernelParams: (h.kernel_params as string).split(/\s+/).filter(Boolean),
    tcgTbSizeMiB: h.tcg_tb_size as number,
  };
  warnings = [...warnings, ...[qemu.warning, assets.warning].filter((w): w is string => w !== undefined)];
  const parallel = (c.max_parallel_boots as number) || Math.max(1, Math.floor(cpus().length / 2));
  const pools = resolvePools(c.pool as ListedPool[], {
    vmCacheNumber: f.vm_cache_number as number,
    cpus: vm.cpus,
    memoryMiB: vm.memoryMiB,
    maxCpus: vm.maxCpus,
    maxMemoryMiB: vm.maxMemoryMiB,
    template: f.enable_template as boolean,
    budgetMiB: c.memory_budget as number,
    at: (n, k) => loc.atPool(n, k),
    atKey: (section, k) => loc.at(section, k),
  });
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
      missPolicy: c.miss_policy as MissPolicy,
      pools,
      memoryBudgetMiB: c.memory_budget as number,
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
export function parseConfigText(
  text: string,
  file: string,
  imageDir: string,
  host: HostLimits = hostLimits(),
): RuntimeConfig {
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
  const { values, warnings, loc } = validateConfig(doc, file, text);
  return toRuntimeConfig(values, file, imageDir, warnings, host, loc);
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
