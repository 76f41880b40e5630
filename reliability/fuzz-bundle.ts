/**
 * Fuzz target 1: `config.json` → `readBundle`. Each case is the default spec (`vmcache spec`) with a few
 * mutations (wrong types at any path, huge strings, deep nesting, control characters, prototype names as keys
 * and values, huge arrays, bad numbers, absurd mounts, namespaces, hooks, rlimits...), sometimes broken as
 * text. It must be accepted, and then be what the validator promises, or refused with VMC_ERR_OCI_* naming the
 * file: nothing else thrown, nothing written to the bundle.
 */
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { defaultSpec } from '../src/cli/runtime/spec.js';
import { isVmcError } from '../src/errors.js';
import { type ContainerConfig, MAX_MOUNTS, readBundle, type StatFs } from '../src/oci/bundle.js';
import { HOOK_KINDS, MAX_HOOK_TIMEOUT_S } from '../src/oci/hooks.js';
import { NAMESPACE_KINDS, PROPAGATION_FLAGS, RLIMITS } from '../src/oci/linux.js';
import { MAX_ID } from '../src/oci/process.js';
import {
  badNumber,
  CaseFailure,
  type FuzzOptions,
  hostileString,
  hostileValue,
  mutated,
  PROTOTYPE_NAMES,
  type Target,
  toJson,
  withKey,
} from './fuzz-common.js';

type Key = string | number;

/** Paths of the spec a mutation aims at: present in the default spec, or read by the validator. */
const PATHS: Key[][] = [
  [],
  ['ociVersion'],
  ['process'],
  ['process', 'terminal'],
  ['process', 'user'],
  ['process', 'user', 'uid'],
  ['process', 'user', 'gid'],
  ['process', 'user', 'additionalGids'],
  ['process', 'args'],
  ['process', 'args', 0],
  ['process', 'env'],
  ['process', 'env', 1],
  ['process', 'cwd'],
  ['process', 'capabilities'],
  ['process', 'capabilities', 'bounding', 0],
  ['process', 'rlimits'],
  ['process', 'rlimits', 0, 'type'],
  ['process', 'rlimits', 0, 'hard'],
  ['process', 'rlimits', 0, 'soft'],
  ['process', 'noNewPrivileges'],
  ['process', 'oomScoreAdj'],
  ['root'],
  ['root', 'path'],
  ['root', 'readonly'],
  ['hostname'],
  ['domainname'],
  ['mounts'],
  ['mounts', 0],
  ['mounts', 1, 'destination'],
  ['mounts', 2, 'type'],
  ['mounts', 3, 'source'],
  ['mounts', 3, 'options'],
  ['mounts', 3, 'options', 0],
  ['linux'],
  ['linux', 'namespaces'],
  ['linux', 'namespaces', 0, 'type'],
  ['linux', 'namespaces', 1, 'path'],
  ['linux', 'maskedPaths'],
  ['linux', 'readonlyPaths', 0],
  ['linux', 'sysctl'],
  ['linux', 'resources'],
  ['linux', 'resources', 'memory', 'limit'],
  ['linux', 'resources', 'cpu', 'quota'],
  ['linux', 'resources', 'cpu', 'period'],
  ['linux', 'resources', 'pids', 'limit'],
  ['linux', 'devices'],
  ['linux', 'uidMappings'],
  ['linux', 'rootfsPropagation'],
  ['hooks'],
  ['hooks', 'prestart', 0, 'path'],
  ['hooks', 'poststop', 0, 'timeout'],
  ['annotations'],
  ['annotations', 'io.kubernetes.cri.container-type'],
  ['annotations', 'io.kubernetes.cri.sandbox-id'],
  ['annotations', 'io.katacontainers.config.hypervisor.kernel_hash'],
];

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null;

/** `root` with `value` at `path` (intermediate levels made objects or arrays as needed); a copy. */
function setAt(root: unknown, path: readonly Key[], value: unknown): unknown {
  if (path.length === 0) return value;
  const [k, ...rest] = path as [Key, ...Key[]];
  const here: object = isObject(root) ? root : typeof k === 'number' ? [] : {};
  const child = (here as Record<Key, unknown>)[k];
  return withKey(here, String(k), setAt(Object.hasOwn(here, k) ? child : undefined, rest, value));
}

/** `root` without the member at `path`; a copy. */
function deleteAt(root: unknown, path: readonly Key[]): unknown {
  if (path.length === 0 || !isObject(root)) return root;
  const [k, ...rest] = path as [Key, ...Key[]];
  if (!Object.hasOwn(root, k)) return root;
  if (rest.length) return withKey(root, String(k), deleteAt(root[k as string], rest));
  const out: Record<string, unknown> = Array.isArray(root) ? ([...root] as never) : { ...root };
  delete out[k as string];
  return out;
}

const oneOf = <T>(...xs: T[]) => fc.constantFrom(...xs);
const num = fc.oneof(fc.nat({ max: 70_000 }), badNumber);

/** Structures of each part of the spec: plausible, absurd, and in between. */
const mount = mutated(
  fc.record({
    destination: oneOf('/x', '/dev/shm', '/..', '/a/../b', 'rel', '/a\u001fb', '/proc', '/'),
    type: oneOf('bind', 'tmpfs', 'proc', 'devpts', 'constructor', '__proto__', 'x\u001e'),
    source: oneOf('/dev/shm', '/tmp', 'tmpfs', 'a\u001eb', 'rel', '/nonexistent', '/a\u0000b'),
    options: fc.array(oneOf('bind', 'rbind', 'ro', 'size=1k', 'mode=\u0000', 'a,b', '\u001f'), {
      maxLength: 4,
    }),
  }),
  ['destination', 'type', 'source', 'options'],
);
const namespace = mutated(
  fc.record(
    {
      type: fc.oneof(oneOf(...Object.keys(NAMESPACE_KINDS)), oneOf(...PROTOTYPE_NAMES, 'net', 'NETWORK', '')),
      path: oneOf('/proc/self/ns/net', '/proc/self/ns/ipc', '/proc/1/ns/pid', '/dev/null', '/nope', 'rel'),
    },
    { requiredKeys: ['type'] },
  ),
  ['type', 'path'],
);
const hook = mutated(
  fc.record(
    {
      path: oneOf('/bin/true', 'rel', '/a\u001eb', '/x\u0000'),
      args: fc.array(hostileString, { maxLength: 3 }),
      env: fc.array(oneOf('A=1', 'B', '\u0000'), { maxLength: 2 }),
      timeout: fc.oneof(fc.integer({ min: -1, max: 700 }), badNumber),
    },
    { requiredKeys: ['path'] },
  ),
  ['path', 'args', 'env', 'timeout'],
);
const rlimit = mutated(
  fc.record({
    type: fc.oneof(oneOf(...Object.keys(RLIMITS)), oneOf(...PROTOTYPE_NAMES, 'RLIMIT_FOO', 'nofile')),
    hard: num,
    soft: num,
  }),
  ['type', 'hard', 'soft'],
);
const device = mutated(
  fc.record({
    type: oneOf('c', 'b', 'u', 'p', 'x', 'constructor'),
    path: oneOf('/dev/null', 'rel', '/dev/x'),
    major: num,
    minor: num,
    fileMode: num,
    uid: num,
    gid: num,
  }),
  ['type', 'path', 'major', 'minor', 'fileMode'],
);
const ANNOTATION_KEYS = [
  'io.kubernetes.cri.container-type',
  'io.kubernetes.cri-o.ContainerType',
  'io.kubernetes.docker.type',
  'io.kubernetes.cri.sandbox-id',
  'io.katacontainers.config.hypervisor.kernel',
  'io.katacontainers.config.hypervisor.image_hash',
];
const annotations = fc.dictionary(
  fc.oneof(oneOf(...ANNOTATION_KEYS), oneOf(...PROTOTYPE_NAMES), hostileString),
  fc.oneof(
    oneOf('sandbox', 'container', 'podsandbox', '/k', 'f'.repeat(64), ...PROTOTYPE_NAMES),
    hostileValue,
  ),
  { maxKeys: 4 },
);
const sysctl = fc.dictionary(
  fc.oneof(
    oneOf('net.ipv4.ip_forward', 'kernel.shmmax', 'kernel.domainname', 'vm.swappiness'),
    hostileString,
  ),
  fc.oneof(oneOf('1', '', 'a\nb'), hostileValue),
  { maxKeys: 4 },
);
const capNames = fc.array(oneOf('CAP_KILL', 'CAP_X', 'cap_kill', 'CAP_', ...PROTOTYPE_NAMES), {
  maxLength: 4,
});
const hooks = fc.dictionary(
  oneOf(...HOOK_KINDS, ...PROTOTYPE_NAMES, 'preStart'),
  fc.oneof(fc.array(hook, { maxLength: 3 }), fc.constant(Array.from({ length: 33 }, () => ({ path: '/x' })))),
  { maxKeys: 3 },
);

const at = (...p: Key[]) => fc.constant<Key[]>(p);

/** A structure for one part of the spec, at its path. */
const part: fc.Arbitrary<[Key[], unknown]> = fc.oneof(
  fc.tuple(
    at('mounts'),
    fc.oneof(fc.array(mount, { maxLength: 6 }), fc.constant(Array(129).fill({ destination: '/x' }))),
  ),
  fc.tuple(at('linux', 'namespaces'), fc.array(namespace, { maxLength: 6 })),
  fc.tuple(at('hooks'), hooks),
  fc.tuple(at('process', 'rlimits'), fc.array(rlimit, { maxLength: 4 })),
  fc.tuple(at('linux', 'devices'), fc.array(device, { maxLength: 3 })),
  fc.tuple(at('linux', 'sysctl'), sysctl),
  fc.tuple(at('annotations'), annotations),
  fc.tuple(
    at('process', 'capabilities'),
    fc.oneof(capNames, fc.dictionary(oneOf('bounding', 'ambient', 'x'), capNames)),
  ),
  fc.tuple(at('process', 'user', 'additionalGids'), fc.array(num, { maxLength: 70 })),
  fc.tuple(
    at('linux', 'rootfsPropagation'),
    fc.oneof(oneOf(...Object.keys(PROPAGATION_FLAGS)), oneOf(...PROTOTYPE_NAMES)),
  ),
  fc.tuple(
    at('linux', 'resources'),
    fc.record(
      {
        memory: fc.record({ limit: num }),
        cpu: fc.record({ quota: num, period: num }),
        pids: fc.record({ limit: num }),
      },
      { requiredKeys: [] },
    ),
  ),
);

type Mutation =
  | { op: 'set'; path: Key[]; value: unknown }
  | { op: 'delete'; path: Key[] }
  | { op: 'key'; path: Key[]; key: string; value: unknown };

const mutation: fc.Arbitrary<Mutation> = fc.oneof(
  {
    weight: 5,
    arbitrary: fc.record({ op: fc.constant('set' as const), path: oneOf(...PATHS), value: hostileValue }),
  },
  { weight: 4, arbitrary: part.map(([path, value]) => ({ op: 'set' as const, path, value })) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('delete' as const), path: oneOf(...PATHS) }) },
  {
    weight: 2,
    arbitrary: fc.record({
      op: fc.constant('key' as const),
      path: oneOf(...PATHS.filter((p) => typeof p[p.length - 1] !== 'number')),
      key: fc.oneof(oneOf(...PROTOTYPE_NAMES), hostileString),
      value: hostileValue,
    }),
  },
);

/** Damage to the text itself. */
type TextDamage =
  | { op: 'none' }
  | { op: 'cut'; at: number }
  | { op: 'append' | 'prepend'; text: string }
  | { op: 'replace'; text: string };
const textDamage: fc.Arbitrary<TextDamage> = fc.oneof(
  { weight: 12, arbitrary: fc.constant({ op: 'none' as const }) },
  {
    weight: 1,
    arbitrary: fc.record({ op: fc.constant('cut' as const), at: fc.double({ min: 0, max: 1, noNaN: true }) }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      op: oneOf('append' as const, 'prepend' as const),
      text: fc.oneof(oneOf('\ufeff', ',', '}', 'x', ' \n'), fc.string()),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      op: fc.constant('replace' as const),
      text: fc.oneof(fc.string(), oneOf('null', '[]', '1', '"x"', '{}', '{"__proto__":{"ociVersion":"1"}}')),
    }),
  },
);

/** A case: the mutations applied to the default spec, and the damage done to its text. */
export interface SpecCase {
  mutations: Mutation[];
  damage: TextDamage;
}

function render(c: SpecCase): string {
  let spec: unknown = defaultSpec();
  for (const m of c.mutations) {
    if (m.op === 'set') spec = setAt(spec, m.path, m.value);
    else if (m.op === 'delete') spec = deleteAt(spec, m.path);
    else spec = setAt(spec, [...m.path, m.key], m.value);
  }
  const text = toJson(spec) ?? 'undefined';
  const d = c.damage;
  if (d.op === 'cut') return text.slice(0, Math.floor(text.length * d.at));
  if (d.op === 'append') return text + d.text;
  if (d.op === 'prepend') return d.text + text;
  if (d.op === 'replace') return d.text;
  return text;
}

const OCI_CODES = new Set(['VMC_ERR_OCI_INVALID', 'VMC_ERR_OCI_BUNDLE', 'VMC_ERR_OCI_UNSUPPORTED']);
/**
 * An error message quotes a short preview of a value (80 characters) and of a key (64); a path at most
 * PATH_MAX: whatever the input's size, the message stays under this.
 */
const MAX_MESSAGE = 8_192;

/**
 * What an accepted config must be, whatever was in the file: the validator's promises, checked on its output
 * (and, for the enumerations whose members are not all in the output, on the input).
 */
function acceptedProblem(json: unknown, c: ContainerConfig): string | null {
  const has = (table: object, k: unknown) => typeof k === 'string' && Object.hasOwn(table, k);
  const p = c.process;
  if (c.containerType !== 'sandbox' && c.containerType !== 'container')
    return `containerType is ${typeof c.containerType} ${String(c.containerType).slice(0, 40)}`;
  if (c.linux.rootfsPropagation !== undefined && typeof c.linux.rootfsPropagation !== 'number')
    return `linux.rootfsPropagation became a ${typeof c.linux.rootfsPropagation}`;
  for (const r of c.linux.rlimits) if (!has(RLIMITS, r.type)) return `rlimit type ${r.type} accepted`;
  const spec = json as { linux?: { namespaces?: Array<{ type?: unknown }> } };
  for (const n of spec.linux?.namespaces ?? [])
    if (!has(NAMESPACE_KINDS, n.type)) return `namespace type ${String(n.type)} accepted`;
  if (!p.args.length || p.args.some((a) => typeof a !== 'string' || a.includes('\u0000')))
    return 'bad args accepted';
  for (const id of [p.uid, p.gid, ...p.additionalGids])
    if (!Number.isInteger(id) || id < 0 || id > MAX_ID) return `id ${id} accepted`;
  if (c.mounts.length > MAX_MOUNTS) return `${c.mounts.length} mounts accepted`;
  for (const m of c.mounts)
    if (!m.destination.startsWith('/') || m.destination.split('/').includes('..'))
      return `mount destination ${m.destination.slice(0, 40)} accepted`;
  for (const kind of HOOK_KINDS)
    for (const h of c.hooks[kind])
      if (
        !h.path.startsWith('/') ||
        (h.timeout !== undefined && (h.timeout < 1 || h.timeout > MAX_HOOK_TIMEOUT_S))
      )
        return `hook ${kind} ${h.path.slice(0, 40)} accepted`;
  if (!(c.shmSize > 0)) return `shm size ${c.shmSize}`;
  try {
    JSON.stringify(c.spec); // the runtime writes it to state.json
  } catch (e) {
    return `the kept spec cannot be written back: ${(e as Error).message}`;
  }
  return null;
}

/** Target 1: a temp bundle with an empty rootfs, one config.json per case. */
export async function bundleTarget(_opts: FuzzOptions): Promise<Target<SpecCase>> {
  const dir = mkdtempSync(join(tmpdir(), 'vmc-fz-oci-'));
  const bundle = join(dir, 'bundle');
  mkdirSync(join(bundle, 'rootfs'), { recursive: true });
  const file = join(bundle, 'config.json');
  // Deterministic: only /dev/shm can be sized; anything else "does not exist".
  const statfs: StatFs = (p) => {
    if (p === '/dev/shm') return { bsize: 4096, blocks: 16_384 };
    throw Object.assign(new Error(`ENOENT: ${p}`), { code: 'ENOENT' });
  };
  return {
    arbitrary: fc.record({ mutations: fc.array(mutation, { maxLength: 4 }), damage: textDamage }),
    async run(c) {
      const text = render(c);
      writeFileSync(file, text);
      let verdict: 'accepted' | 'refused';
      try {
        const out = readBundle(bundle, statfs);
        const problem = acceptedProblem(JSON.parse(text), out);
        if (problem) throw new CaseFailure('violation', `accepted an invalid spec: ${problem}`);
        verdict = 'accepted';
      } catch (e) {
        if (e instanceof CaseFailure) throw e;
        if (!isVmcError(e) || !OCI_CODES.has(e.code)) throw e; // a crash: runTarget names it
        if (!e.message.includes('config.json') || e.message.length > MAX_MESSAGE)
          throw new CaseFailure(
            'violation',
            `unclear error (${e.message.length} chars): ${e.message.slice(0, 200)}`,
          );
        verdict = 'refused';
      }
      const left = readdirSync(bundle).sort().join(',');
      if (left !== 'config.json,rootfs' || readdirSync(join(bundle, 'rootfs')).length)
        throw new CaseFailure('violation', `the bundle changed: ${left}`);
      return verdict;
    },
    // A library call: it serves as long as the next valid bundle reads.
    async probe() {
      writeFileSync(file, JSON.stringify(defaultSpec()));
      readBundle(bundle, statfs);
    },
    async finish() {
      return [];
    },
    async close() {
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
