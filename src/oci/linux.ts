import { readFileSync, readlinkSync, realpathSync } from 'node:fs';
import { isHelperSafe } from '../platform/c-string.js';
import { unescapeMount } from '../platform/mounts.js';
import type { At } from './validate.js';

/**
 * The parts of config.json that vmcache applies inside the guest beyond mounts and resources (runc applies
 * them too): masked and read-only paths, sysctls, root propagation, rlimits, the OOM score, namespace paths.
 * Each is validated here, at the boundary, with errors naming the JSON path; what vmcache cannot honour in a
 * VM is refused, never dropped.
 */

/** A resource limit of `process.rlimits`, as setrlimit(2) takes it. `null` is RLIM_INFINITY. */
interface Rlimit {
  type: RlimitName;
  soft: number | null;
  hard: number | null;
}

/** Linux's resource numbers (x86_64 and every other architecture Linux shares them on). */
export const RLIMITS = {
  RLIMIT_CPU: 0,
  RLIMIT_FSIZE: 1,
  RLIMIT_DATA: 2,
  RLIMIT_STACK: 3,
  RLIMIT_CORE: 4,
  RLIMIT_RSS: 5,
  RLIMIT_NPROC: 6,
  RLIMIT_NOFILE: 7,
  RLIMIT_MEMLOCK: 8,
  RLIMIT_AS: 9,
  RLIMIT_LOCKS: 10,
  RLIMIT_SIGPENDING: 11,
  RLIMIT_MSGQUEUE: 12,
  RLIMIT_NICE: 13,
  RLIMIT_RTPRIO: 14,
  RLIMIT_RTTIME: 15,
} as const;
type RlimitName = keyof typeof RLIMITS;

/** mount(2) propagation flags for `linux.rootfsPropagation` (runc's table). */
export const PROPAGATION_FLAGS: Record<string, number> = {
  private: 1 << 18,
  rprivate: (1 << 18) | 16384,
  slave: 1 << 19,
  rslave: (1 << 19) | 16384,
  shared: 1 << 20,
  rshared: (1 << 20) | 16384,
  unbindable: 1 << 17,
  runbindable: (1 << 17) | 16384,
};

/** Namespace types of `linux.namespaces` and the name the kernel gives each in /proc/PID/ns links. */
export const NAMESPACE_KINDS: Record<string, string> = {
  pid: 'pid',
  network: 'net',
  mount: 'mnt',
  ipc: 'ipc',
  uts: 'uts',
  user: 'user',
  cgroup: 'cgroup',
  time: 'time',
};
type NamespaceType = keyof typeof NAMESPACE_KINDS;

/** A namespace the bundle asks to join by path (`linux.namespaces[i].path`), other than the network one. */
interface NamespacePath {
  type: NamespaceType;
  path: string;
  /** The JSON path, for errors raised later (when it is known whether the namespace can be joined). */
  at: string;
}

/** What `linux` (and `process.rlimits`, `process.oomScoreAdj`) ask for beyond mounts and resources. */
export interface LinuxExtras {
  maskedPaths: string[];
  readonlyPaths: string[];
  sysctl: Record<string, string>;
  /** mount(2) propagation flags for the container's root, when `linux.rootfsPropagation` is set. */
  rootfsPropagation?: number;
  rlimits: Rlimit[];
  oomScoreAdj?: number;
  /** Namespaces other than the network one given by path: joinable only in a pod (see sandbox/namespaces). */
  namespacePaths: NamespacePath[];
  /** The network namespace to bring into the VM. */
  netns?: string;
}

/** Reads the namespace type of a /proc/PID/ns/KIND-style path (`ipc:[4026531839]` → `ipc`); null if none. */
export type NamespaceKindOf = (path: string) => string | null;

/**
 * Production NamespaceKindOf. A `/proc/PID/ns/KIND` path is a link whose target names the kind. A named
 * namespace (`/var/run/netns/NAME`, as CNI and `ip netns` make them) is an nsfs file bind-mounted there:
 * mountinfo gives it as a mount of type nsfs whose root names the kind.
 */
export const namespaceKindOf: NamespaceKindOf = (path) => {
  const kind = (s: string) => /^([a-z_]+):\[\d+\]$/.exec(s)?.[1] ?? null;
  try {
    return kind(readlinkSync(path));
  } catch {
    // not a link: a bind-mounted namespace file, or nothing
  }
  let info: string;
  try {
    info = readFileSync('/proc/self/mountinfo', 'utf8');
  } catch {
    return null;
  }
  const target = realpathOr(path);
  for (const line of info.split('\n')) {
    // mountinfo: ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTIONS
    const f = line.split(' ');
    const sep = f.indexOf('-');
    if (sep < 0 || f[sep + 1] !== 'nsfs') continue;
    if (unescapeMount(f[4] ?? '') === target) return kind(f[3] ?? '');
  }
  return null;
};

/** The path with symlinks resolved (`/var/run` → `/run`), or as given when it cannot be resolved. */
function realpathOr(path: string): string {
  try {
    return realpathSync(path);
  } catch {
    return path;
  }
}

/**
 * sysctls that belong to a namespace a container has of its own (or shares with its pod) inside the VM, as
 * runc's validator lists them: IPC (System V and POSIX message queues), UTS, and the network namespace, which
 * inside the VM is the pod's. Others would change the whole guest kernel, shared by every container of a pod.
 */
export function sysctlNamespace(key: string): 'ipc' | 'uts' | 'net' | null {
  if (/^kernel\.(msgmax|msgmnb|msgmni|sem|shmall|shmmax|shmmni|shm_rmid_forced)$/.test(key)) return 'ipc';
  if (key.startsWith('fs.mqueue.')) return 'ipc';
  if (key === 'kernel.hostname' || key === 'kernel.domainname') return 'uts';
  if (key.startsWith('net.')) return 'net';
  return null;
}

/**
 * Whether `name` is a member of `table` itself: `name in table` and `table[name]` also find Object.prototype's
 * members, which let `constructor` or `__proto__` pass as an rlimit, a namespace type or a propagation (found
 * by fuzzing).
 */
const isMember = (table: object, name: string): boolean => Object.hasOwn(table, name);

/** No NUL (C strings), no unit or record separator (the helper's field separators). */
const cSafe = isHelperSafe;

/** Masked paths, read-only paths and sysctls the guest helper takes, each (`masked[256]`… in vmc-helper.c). */
export const MAX_PATHS = 256;
export const MAX_SYSCTLS = 256;

/** An absolute path inside the container that cannot climb out of its root. */
const containerPath = (a: At): string => a.containerPath();

/** `linux.maskedPaths` or `linux.readonlyPaths`. */
const containerPaths = (a: At): string[] =>
  a.arrayOf(MAX_PATHS, 'paths', "the guest helper's limit").map(containerPath);

/** An rlimit bound: a non-negative integer; 2^64-1 (RLIM_INFINITY, rounded by JSON numbers) means none. */
function rlimitValue(a: At): number | null {
  const v = a.value;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0) a.fail('a non-negative integer');
  if ((v as number) >= 2 ** 63) return null;
  if (!Number.isSafeInteger(v)) a.fail('an integer below 2^53, or 18446744073709551615 for no limit');
  return v as number;
}

function rlimits(a: At): Rlimit[] {
  if (!a.exists()) return [];
  const seen = new Set<string>();
  return a.array().map((r) => {
    const type = r.get('type').string();
    if (!isMember(RLIMITS, type)) r.get('type').fail(`one of ${Object.keys(RLIMITS).join(', ')}`);
    if (seen.has(type)) r.get('type').fail(`a type not already given (${type} is given twice)`);
    seen.add(type);
    const hard = rlimitValue(r.get('hard'));
    const soft = rlimitValue(r.get('soft'));
    if (hard !== null && (soft === null || soft > hard)) r.get('soft').fail(`at most hard (${hard})`);
    return { type: type as RlimitName, soft, hard };
  });
}

function sysctls(a: At): Record<string, string> {
  if (!a.exists()) return {};
  const out: Record<string, string> = Object.create(null);
  const all = Object.entries(a.stringMap());
  if (all.length > MAX_SYSCTLS)
    a.fail(`at most ${MAX_SYSCTLS} sysctls (the guest helper's limit)`, `${all.length}`);
  for (const [key, value] of all) {
    const at = a.get(key);
    if (!/^[a-z0-9_]+(\.[a-zA-Z0-9_-]+)+$/.test(key))
      at.fail('set under a sysctl name (dot-separated words, e.g. net.ipv4.ip_forward)');
    if (!sysctlNamespace(key))
      at.fail(
        'a namespaced sysctl (kernel.msg*, kernel.sem, kernel.shm*, fs.mqueue.*, kernel.hostname, kernel.domainname, net.*): others would change the guest kernel every container of the VM shares',
      );
    if (!cSafe(value) || value.length > 4096 || value.includes('\n')) at.fail('a single-line value');
    out[key] = value;
  }
  return out;
}

function namespaces(a: At, kindOf: NamespaceKindOf): Pick<LinuxExtras, 'namespacePaths' | 'netns'> {
  const out: Pick<LinuxExtras, 'namespacePaths' | 'netns'> = { namespacePaths: [] };
  if (!a.exists()) return out;
  const seen = new Set<string>();
  for (const n of a.array()) {
    const t = n.get('type');
    const type = t.string();
    if (!isMember(NAMESPACE_KINDS, type)) t.fail(`one of ${Object.keys(NAMESPACE_KINDS).join(', ')}`);
    if (seen.has(type)) t.fail(`a type not already given (${type} is given twice)`);
    seen.add(type);
    if (type === 'user')
      t.fail(
        'another type: user namespaces are not supported (the VM is the isolation boundary; run the container without linux.namespaces user and linux.uidMappings/gidMappings)',
      );
    if (type === 'time')
      t.fail('another type: time namespaces are not supported (each VM has its own clock already)');
    const p = n.get('path');
    if (!p.exists()) continue;
    const path = p.absolutePath();
    const kind = kindOf(path);
    if (kind === null) p.fail(`a readable namespace file (/proc/PID/ns/${NAMESPACE_KINDS[type]})`);
    if (kind !== NAMESPACE_KINDS[type])
      p.fail(`a ${type} namespace (/proc/PID/ns/${NAMESPACE_KINDS[type]}), not a ${kind} one`);
    if (type === 'network') out.netns = path;
    else out.namespacePaths.push({ type: type as NamespaceType, path, at: p.path });
  }
  return out;
}

/** Reads and validates the extras of `spec` (the config.json root) and its `process`. */
export function linuxExtras(spec: At, process: At, kindOf: NamespaceKindOf): LinuxExtras {
  const linux = spec.get('linux');
  for (const key of ['uidMappings', 'gidMappings'] as const) {
    const m = linux.get(key);
    if (m.exists() && m.array().length > 0)
      m.fail('empty: user namespaces (uid/gid mappings) are not supported, the VM is the isolation boundary');
  }
  const prop = linux.get('rootfsPropagation');
  const out: LinuxExtras = {
    maskedPaths: linux.get('maskedPaths').optional(containerPaths) ?? [],
    readonlyPaths: linux.get('readonlyPaths').optional(containerPaths) ?? [],
    sysctl: sysctls(linux.get('sysctl')),
    rlimits: rlimits(process.get('rlimits')),
    ...namespaces(linux.get('namespaces'), kindOf),
  };
  if (prop.exists()) {
    const p = prop.string();
    const flags = isMember(PROPAGATION_FLAGS, p) ? PROPAGATION_FLAGS[p] : undefined;
    if (flags === undefined) prop.fail(`one of ${Object.keys(PROPAGATION_FLAGS).join(', ')}`);
    out.rootfsPropagation = flags;
  }
  const oom = process.get('oomScoreAdj');
  if (oom.exists()) {
    const v = oom.int();
    if (v < -1000 || v > 1000) oom.fail('an integer from -1000 to 1000');
    out.oomScoreAdj = v;
  }
  return out;
}
