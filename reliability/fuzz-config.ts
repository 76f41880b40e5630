/**
 * Fuzz target 2: `configuration.toml` → `parseConfigText` (what `loadConfig` runs on the file's text). Each case
 * is a TOML document of known sections and keys (src/config/schema.ts) with random values, unknown and
 * prototype-named keys and sections, long and quoted names, TOML's other types (floats, dates, arrays, inline
 * tables), sometimes damaged as text. It must be accepted, with every value in its declared range, or refused
 * with VMC_ERR_CONFIG_INVALID naming the file: nothing else thrown.
 */
import fc from 'fast-check';
import { parseConfigText, type RuntimeConfig } from '../src/config/config.js';
import { KATA_IGNORED } from '../src/config/kata-keys.js';
import { type KeySpec, SCHEMA } from '../src/config/schema.js';
import { isVmcError } from '../src/errors.js';
import { CaseFailure, type FuzzOptions, hostileString, PROTOTYPE_NAMES, type Target } from './fuzz-common.js';

const FILE = 'fuzz.toml';
const SECTION_NAMES = Object.keys(SCHEMA) as Array<keyof typeof SCHEMA>;
const keysOf = (s: keyof typeof SCHEMA) => SCHEMA[s].keys as Record<string, KeySpec>;

/** A key or section name as TOML writes it: bare when it can be, else a basic string. */
const tomlKey = (k: string) => (/^[A-Za-z0-9_-]+$/.test(k) ? k : JSON.stringify(k));
const tomlString = (s: string) => JSON.stringify(s); // JSON's escapes are TOML's (lone surrogates are refused)

/** TOML values of every type, including those no key takes. */
const anyValue: fc.Arbitrary<string> = fc.oneof(
  fc.integer().map(String),
  fc.constantFrom('1.0', '1.5', '-0.0', 'inf', '-inf', 'nan', '1e3', '0x10', '0o7', '0b1', '+1', '1_000'),
  fc.constantFrom('99999999999999999999', '-9223372036854775809', '9223372036854775807', '00', '1__0'),
  fc.constantFrom(
    'true',
    'false',
    'TRUE',
    '1979-05-27T07:32:00Z',
    '07:32:00',
    '1979-05-27',
    "'lit'",
    "'''m\nl'''",
  ),
  fc.constantFrom(
    '"\\u0000"',
    '"\\uD800"',
    '"\\x41"',
    '"a\\',
    '"""\nx"""',
    '[]',
    '[1, "a"]',
    '{}',
    '{ a = 1 }',
  ),
  fc.constantFrom(
    '[[[[[[[[[[1]]]]]]]]]]',
    `${'['.repeat(2_000)}${']'.repeat(2_000)}`,
    `${'{a='.repeat(500)}1${'}'.repeat(500)}`,
  ),
  hostileString.map(tomlString),
  fc.array(hostileString, { maxLength: 3 }).map((a) => `[${a.map(tomlString).join(', ')}]`),
);

/** Values meant for `spec`: mostly in range or at its edges, so that whole documents are often valid. */
function valueFor(spec: KeySpec | undefined): fc.Arbitrary<string> {
  if (!spec) return anyValue;
  const typed: fc.Arbitrary<string> = (() => {
    switch (spec.type) {
      case 'bool':
        return fc.constantFrom('true', 'false');
      case 'int':
        return fc
          .oneof(
            fc.integer({ min: spec.min, max: spec.max }),
            fc.constantFrom(spec.min, spec.max, spec.min - 1, spec.max + 1, spec.min + 1),
          )
          .map(String);
      case 'string':
        return fc
          .oneof(
            fc.constantFrom(
              '',
              'q35',
              'auto',
              'kvm',
              'tcg',
              'x',
              '/tmp/vmc-fuzz/x',
              '/run/vmc.sock',
              'a b c',
            ),
            fc.constantFrom(
              '127.0.0.1:9090',
              'localhost:1',
              '[::1]:65535',
              '127.0.0.1:0',
              '10.0.0.1:80',
              ':80',
            ),
            fc.constantFrom(
              `/${'a'.repeat(106)}`,
              `/${'a'.repeat(107)}`,
              `/${'é'.repeat(54)}`,
              '/dir/',
              '/a\u0000b',
            ),
            hostileString,
          )
          .map(tomlString);
      case 'strings':
        return fc.array(fc.string(), { maxLength: 3 }).map((a) => `[${a.map(tomlString).join(', ')}]`);
    }
  })();
  return fc.oneof({ weight: 6, arbitrary: typed }, { weight: 1, arbitrary: anyValue });
}

/** Names that are not keys of any section: unknown, prototype-named, long, quoted with controls. */
const strangeName = fc.oneof(
  fc.constantFrom(...PROTOTYPE_NAMES),
  fc.stringMatching(/^[a-z_]{1,12}$/),
  fc.constantFrom('k'.repeat(300), 'a.b', '', ' ', 'hypervisor', 'qemu'),
  hostileString.filter((s) => s.length < 5_000),
);

type Line = [key: string, value: string];
/** A section: its header (null: keys at the top level), how it is written, and its lines. */
interface Section {
  name: string | null;
  style: 'table' | 'array' | 'inline';
  lines: Line[];
}

function sectionOf(name: string | null, known: keyof typeof SCHEMA | null): fc.Arbitrary<Section> {
  const specs = known ? keysOf(known) : {};
  const knownKeys = Object.keys(specs);
  const ignored = known ? [...(KATA_IGNORED.get(known)?.keys() ?? [])] : [];
  const key = fc.oneof(
    ...(knownKeys.length ? [{ weight: 6, arbitrary: fc.constantFrom(...knownKeys) }] : []),
    ...(ignored.length ? [{ weight: 1, arbitrary: fc.constantFrom(...ignored) }] : []),
    { weight: 2, arbitrary: strangeName },
  );
  const line = key.chain((k) =>
    valueFor(Object.hasOwn(specs, k) ? specs[k] : undefined).map((v): Line => [k, v]),
  );
  return fc.record({
    name: fc.constant(name),
    style: fc.constantFrom<Section['style']>('table', 'table', 'table', 'table', 'array', 'inline'),
    lines: fc.uniqueArray(line, { maxLength: 6, selector: ([k]) => k }),
  });
}

const section: fc.Arbitrary<Section> = fc.oneof(
  { weight: 8, arbitrary: fc.constantFrom(...SECTION_NAMES).chain((s) => sectionOf(s, s)) },
  {
    weight: 1,
    arbitrary: fc
      .constantFrom(...PROTOTYPE_NAMES, 'x', 'qemu')
      .chain((h) => sectionOf(`hypervisor.${h}`, null)),
  },
  { weight: 2, arbitrary: strangeName.chain((n) => sectionOf(n, null)) },
  { weight: 1, arbitrary: sectionOf(null, null) },
);

/** Damage to the text. */
type Damage =
  | { op: 'none' }
  | { op: 'cut'; at: number }
  | { op: 'insert'; at: number; text: string }
  | { op: 'crlf' | 'bom' | 'dup' };
const damage: fc.Arbitrary<Damage> = fc.oneof(
  { weight: 10, arbitrary: fc.constant({ op: 'none' as const }) },
  {
    weight: 1,
    arbitrary: fc.record({ op: fc.constant('cut' as const), at: fc.double({ min: 0, max: 1, noNaN: true }) }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      op: fc.constant('insert' as const),
      at: fc.double({ min: 0, max: 1, noNaN: true }),
      text: fc.oneof(
        fc.string({ unit: 'binary' }),
        fc.constantFrom('[', ']]', '= 1', 'a =', '"', '\u0000', '[factory]\n'),
      ),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.constantFrom({ op: 'crlf' as const }, { op: 'bom' as const }, { op: 'dup' as const }),
  },
);

/** A case: the sections of the document and the damage done to its text. */
export interface TomlCase {
  sections: Section[];
  damage: Damage;
}

function headerName(name: string): string {
  // `hypervisor.X` is the table X inside hypervisor: two keys, each written as TOML writes a key.
  return name.startsWith('hypervisor.') ? `hypervisor.${tomlKey(name.slice(11))}` : tomlKey(name);
}

function render(c: TomlCase): string {
  const out: string[] = [];
  const top = c.sections.filter((s) => s.name === null || s.style === 'inline');
  const tables = c.sections.filter((s) => s.name !== null && s.style !== 'inline');
  // Top-level keys and inline tables come before the first header (TOML puts them in the last table otherwise).
  for (const s of top) {
    if (s.name === null) for (const [k, v] of s.lines) out.push(`${tomlKey(k)} = ${v}`);
    else
      out.push(`${headerName(s.name)} = { ${s.lines.map(([k, v]) => `${tomlKey(k)} = ${v}`).join(', ')} }`);
  }
  for (const s of tables) {
    const h = headerName(s.name!);
    out.push(s.style === 'array' ? `[[${h}]]` : `[${h}]`);
    for (const [k, v] of s.lines) out.push(`${tomlKey(k)} = ${v}`);
  }
  let text = `${out.join('\n')}\n`;
  const d = c.damage;
  if (d.op === 'cut') text = text.slice(0, Math.floor(text.length * d.at));
  if (d.op === 'insert') {
    const at = Math.floor(text.length * d.at);
    text = text.slice(0, at) + d.text + text.slice(at);
  }
  if (d.op === 'crlf') text = text.replace(/\n/g, '\r\n');
  if (d.op === 'bom') text = `\ufeff${text}`;
  if (d.op === 'dup') text += out.at(-1) ?? '';
  return text;
}

/** [RuntimeConfig value, section, key, scale] of every integer key: accepted values must be in range. */
const INTS: Array<[(c: RuntimeConfig) => number, keyof typeof SCHEMA, string, number]> = [
  [(c) => c.factory.vmCacheNumber, 'factory', 'vm_cache_number', 1],
  [(c) => c.vm.cpus, 'hypervisor.qemu', 'default_vcpus', 1],
  [(c) => c.vm.maxCpus, 'hypervisor.qemu', 'default_maxvcpus', 1],
  [(c) => c.vm.memoryMiB, 'hypervisor.qemu', 'default_memory', 1],
  [(c) => c.vm.memorySlots, 'hypervisor.qemu', 'memory_slots', 1],
  [(c) => c.vm.maxMemoryMiB, 'hypervisor.qemu', 'default_maxmemory', 1],
  [(c) => c.vm.tcgTbSizeMiB, 'hypervisor.qemu', 'tcg_tb_size', 1],
  [(c) => c.agentDialTimeoutMs, 'agent', 'dial_timeout', 1000],
  [(c) => c.cache.maxAgeMs, 'cache', 'max_age', 1000],
  [(c) => c.cache.healthIntervalMs, 'cache', 'health_interval', 1000],
  [(c) => c.cache.acquireTimeoutMs, 'cache', 'acquire_timeout', 1000],
  [(c) => c.cache.leaseTimeoutMs, 'cache', 'lease_timeout', 1000],
  [(c) => c.cache.retryInitialMs, 'cache', 'retry_initial', 1000],
  [(c) => c.cache.retryMaxMs, 'cache', 'retry_max', 1000],
];

/** Every string of `v`, however deep. */
function strings(v: unknown, out: string[] = []): string[] {
  if (typeof v === 'string') out.push(v);
  else if (typeof v === 'object' && v !== null) for (const x of Object.values(v)) strings(x, out);
  return out;
}

/** What an accepted configuration must be: each value in its range, usable strings, bounded warnings, frozen. */
function acceptedProblem(c: RuntimeConfig): string | null {
  for (const [get, s, k, scale] of INTS) {
    const spec = keysOf(s)[k] as Extract<KeySpec, { type: 'int' }>;
    const v = get(c) / scale;
    if (!Number.isInteger(v) || v < spec.min || v > spec.max) return `[${s}] ${k} = ${v} accepted`;
  }
  if (c.vm.maxCpus < c.vm.cpus || c.vm.maxMemoryMiB < c.vm.memoryMiB) return 'a maximum below its default';
  if (c.vm.machine !== 'q35') return `machine ${c.vm.machine}`;
  if (!c.factory.vmCacheEndpoint.startsWith('/') || Buffer.byteLength(c.factory.vmCacheEndpoint) > 107)
    return `vm_cache_endpoint ${c.factory.vmCacheEndpoint.slice(0, 40)}`;
  const nul = strings(c).find((s) => s.includes('\u0000'));
  if (nul !== undefined) return `a string with NUL accepted (${JSON.stringify(nul.slice(0, 40))})`;
  if (c.warnings.length > 64 || c.warnings.some((w) => w.length > 4096))
    return `${c.warnings.length} warnings, the longest ${Math.max(...c.warnings.map((w) => w.length))} chars`;
  if (!Object.isFrozen(c) || !Object.isFrozen(c.vm) || !Object.isFrozen(c.cache)) return 'not frozen';
  return null;
}

/** Target 2: no files; the loader's parse of a text. */
export async function configTarget(_opts: FuzzOptions): Promise<Target<TomlCase>> {
  const good = '[factory]\nvm_cache_number = 2\n[hypervisor.qemu]\ndefault_vcpus = 2\n';
  return {
    arbitrary: fc.record({ sections: fc.array(section, { maxLength: 6 }), damage }),
    async run(c) {
      let cfg: RuntimeConfig;
      try {
        cfg = parseConfigText(render(c), FILE, '/img');
      } catch (e) {
        if (!isVmcError(e, 'VMC_ERR_CONFIG_INVALID')) throw e; // a crash: runTarget names it
        if (!e.message.startsWith(FILE) || e.message.length > 4096)
          throw new CaseFailure(
            'violation',
            `unclear error (${e.message.length} chars): ${e.message.slice(0, 200)}`,
          );
        return 'refused';
      }
      const problem = acceptedProblem(cfg);
      if (problem) throw new CaseFailure('violation', `accepted an invalid configuration: ${problem}`);
      return 'accepted';
    },
    async probe() {
      const c = parseConfigText(good, FILE, '/img');
      if (c.factory.vmCacheNumber !== 2 || c.vm.cpus !== 2)
        throw new Error('a good configuration reads wrong');
    },
    async finish() {
      return [];
    },
    async close() {},
  };
}
