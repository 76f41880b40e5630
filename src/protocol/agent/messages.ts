/**
 * Agent protocol messages. Host → guest: `hello` and `req`. Guest → host: `ready`, `hello-ok`, `res`, `out`,
 * `exit`. Both sides validate every frame with the parsers below; a frame that fails validation gets an error
 * reply (when it carries a request id) and is otherwise dropped: it never takes the agent down.
 */
import { isHelperSafe } from '../../platform/c-string.js';
import type { WindowSize } from '../../platform/terminal.js';
import { isObj, isOneOf, isStrings, isUint, type Obj, shownValue } from '../guards.js';
import { type HelloTimes, helloTimesError, type ReplyTimes, replyTimesError } from './guest-times.js';

export type { HelloTimes, ReplyTimes };

/** Protocol version carried in the handshake; bumped on incompatible changes. */
export const AGENT_PROTOCOL_VERSION = 1;

/** Options of an `exec` request. */
export interface ExecRequest {
  args: string[];
  env?: string[];
  cwd?: string;
  uid?: number;
  gid?: number;
  /** Whether the host will send stdin; when false the process gets /dev/null. */
  stdin?: boolean;
  /** Run the process as a container (own root, mounts and namespaces) instead of in the guest's root. */
  container?: ContainerExec;
  /**
   * A terminal (OCI `process.terminal`), for container processes only: the process gets a pty of the
   * container's devpts at this size; its output comes as fd 1 (the pty merges stderr) and `resize` changes it.
   */
  terminal?: WindowSize;
}

export type { WindowSize };

/** Usage and limits of a container's guest cgroup (cgroup v2 files, parsed; null for "max"). */
export interface CgroupStats {
  memory: {
    current: number;
    max: number | null;
    peak: number | null;
    stat: Record<string, number>;
    events: Record<string, number>;
  };
  /** `cpu.stat`: usage_usec, user_usec, system_usec, nr_periods, nr_throttled, throttled_usec. */
  cpu: Record<string, number>;
  pids: { current: number; max: number | null };
  /** The guest pids in the cgroup (`cgroup.procs`), for `ps` and the shim's Pids. */
  procs: number[];
}

/** Why an agent's `cgroup-stats` answer is not a CgroupStats (naming the field), or null. */
export function cgroupStatsError(v: unknown): string | null {
  const num = (x: unknown) => typeof x === 'number' && Number.isFinite(x) && x >= 0;
  const limit = (x: unknown) => x === null || num(x);
  const flat = (x: unknown) => isObj(x) && Object.values(x).every(num);
  if (!isObj(v) || !isObj(v.memory) || !isObj(v.pids)) return 'cgroup stats must have memory and pids';
  const m = v.memory;
  if (!num(m.current) || !limit(m.max) || !limit(m.peak))
    return 'memory.current, max or peak is not a number';
  if (!flat(m.stat) || !flat(m.events) || !flat(v.cpu))
    return 'memory.stat, memory.events or cpu is not a map of numbers';
  if (!num(v.pids.current) || !limit(v.pids.max)) return 'pids.current or max is not a number';
  if (!Array.isArray(v.procs) || !v.procs.every((p) => Number.isSafeInteger(p) && p > 0))
    return 'procs is not a list of pids';
  return null;
}

/** Why `v` is not a window size (1 to 65535 rows and columns), or null. */
export function windowSizeError(v: unknown, at: string): string | null {
  if (!isObj(v)) return `${at} must be an object with rows and cols`;
  for (const k of ['rows', 'cols'] as const) {
    const n = v[k];
    if (typeof n !== 'number' || !Number.isInteger(n) || n < 1 || n > 65535)
      return `${at}.${k} must be an integer from 1 to 65535`;
  }
  return null;
}

/**
 * A process to run in a running container, complete as a resolved OCI process is (what the control channel's
 * `exec` carries; the shim turns it into an ExecRequest, its groups going to `container.additionalGids`).
 */
export interface ExecProcess {
  args: string[];
  env: string[];
  cwd: string;
  uid: number;
  gid: number;
  additionalGids: number[];
}

/** Mount types the guest honours for a container. */
export const CONTAINER_MOUNT_TYPES = [
  'bind',
  'proc',
  'sysfs',
  'tmpfs',
  'devpts',
  'mqueue',
  'cgroup2',
] as const;

/** cgroup v2 files a container's limits may set. */
export const CGROUP_LIMIT_FILES = [
  'memory.max',
  'memory.swap.max',
  'cpu.max',
  'cpu.weight',
  'pids.max',
] as const;

/** One mount made for a container before it starts. */
export interface ContainerMount {
  type: (typeof CONTAINER_MOUNT_TYPES)[number];
  /** For `bind`: a path relative to the VM's shared directory; otherwise the file system's source label. */
  source: string;
  /** Absolute path inside the container's root. */
  target: string;
  /** mount(2) flags (MS_RDONLY, MS_NOSUID, ...). */
  flags: number;
  /** File-system specific options (`mode=755,size=65536k`). */
  data: string;
}

/** How a process is made a container process. `uid`, `gid`, `cwd` and `env` of the request apply inside. */
export interface ContainerExec {
  /** The container's root: a directory relative to the VM's shared directory (e.g. `c1/rootfs`). */
  root: string;
  /** Join the namespaces and root of this running container process (guest pid) instead of making new ones. */
  join?: number;
  hostname?: string;
  readonly?: boolean;
  noNewPrivileges?: boolean;
  additionalGids?: number[];
  mounts?: ContainerMount[];
  /** The cgroup v2 leaf `/sys/fs/cgroup/vmcache/<name>` the process joins, and the limits written there first. */
  cgroup?: { name: string; limits?: Partial<Record<(typeof CGROUP_LIMIT_FILES)[number], string>> };
  /** Paths hidden from the container (a read-only tmpfs on a directory, /dev/null on a file). */
  maskedPaths?: string[];
  /** Paths bind-mounted read-only onto themselves. */
  readonlyPaths?: string[];
  /** Namespaced sysctls (`net.ipv4.ip_forward` → `1`), written in the container's namespaces. */
  sysctl?: Record<string, string>;
  /** mount(2) propagation flags applied to the container's root (`linux.rootfsPropagation`). */
  propagation?: number;
  /** setrlimit(2) limits: the resource number and its bounds (`null`: unlimited). */
  rlimits?: Array<{ resource: number; soft: number | null; hard: number | null }>;
  /** Written to /proc/self/oom_score_adj before the program runs. */
  oomScoreAdj?: number;
  /** Namespaces joined from a running container process (guest pid) instead of made anew: a pod's IPC/UTS/PID. */
  shareNamespaces?: { pid: number; kinds: Array<(typeof SHAREABLE_NAMESPACES)[number]> };
  /** startContainer hooks: run inside the container (its root and namespaces) right before the program. */
  startHooks?: Array<{ path: string; args: string[]; env: string[]; timeout: number }>;
  /** The OCI state JSON the hooks get on stdin. */
  hookState?: string;
}

/** Namespaces a container process may join from another container process of its pod. */
export const SHAREABLE_NAMESPACES = ['ipc', 'uts', 'cgroup', 'pid'] as const;

/** A guest NIC's configuration, copied from the pod's interface it stands for. */
/**
 * Bounds on one NIC's addresses and routes: far above what a pod's interface holds, and they keep the helper's
 * `net` line (vmc-helper.c, one line of at most 16 KiB) whole.
 */
export const NIC_MAX_ADDRESSES = 32;
export const NIC_MAX_ROUTES = 64;

export interface NicConfig {
  mac: string;
  mtu: number;
  /** CIDR addresses, e.g. `198.18.0.2/24`. */
  addresses: string[];
  /** Routes: `dest` is CIDR or `default`; `via` a gateway (optional for on-link routes). */
  routes: Array<{ dest: string; via?: string }>;
}

/** Every request operation and its arguments. */
export type AgentRequest =
  | { op: 'ping' }
  | { op: 'exec'; exec: ExecRequest }
  | { op: 'stdin'; proc: number; data: string }
  | { op: 'close-stdin'; proc: number }
  | { op: 'signal'; proc: number; signal: string }
  /** Sets the window size of a process's terminal (one started with `terminal`). */
  | { op: 'resize'; proc: number; rows: number; cols: number }
  /** Whether the process still runs with its exit yet to be sent to this session (the host's liveness check). */
  | { op: 'proc-status'; proc: number }
  /** Signals every process in the container cgroup `/sys/fs/cgroup/vmcache/<name>` (what `kill --all` needs). */
  | { op: 'signal-cgroup'; name: string; signal: string }
  /** Writes limit files of a container's cgroup (`update`): `memory.max`, `cpu.max`, `pids.max`. */
  | { op: 'update-cgroup'; name: string; limits: Record<string, string> }
  /** Reads a container cgroup's usage and limits (`events --stats`); the answer is a CgroupStats. */
  | { op: 'cgroup-stats'; name: string }
  | { op: 'reseed'; data: string }
  | { op: 'set-time'; epochNs: string }
  /** Ensure at least `cpus` vCPUs are online (0: leave CPUs alone), waiting for hot-added ones to appear. */
  | { op: 'online'; cpus: number; memory: boolean }
  | { op: 'mount-shared' }
  /** Flushes what the guest holds for the share (syncfs): every byte written there is on the host after it. */
  | { op: 'sync' }
  /** Configures the NIC with this MAC (waiting for it to appear after a hot-plug): MTU, addresses, routes. */
  /**
   * Configures the NIC with `nic.mac` (hot-plugged; waits for it to appear) or, with `spare`, the VM's spare NIC
   * (protocol/spare-nic.ts), which also gets `nic.mac`.
   */
  | { op: 'net'; nic: NicConfig; spare?: boolean }
  /** Runs the exec and container paths once (and mounts the share if `share`), so their first real use is fast. */
  | { op: 'warm'; share: boolean }
  /**
   * Runs `passes` passes of freshly written machine code (vmc-helper `churn`): under TCG each makes QEMU
   * translate anew, filling its translation buffer towards a flush (hypervisor/qemu/translations.ts).
   */
  | { op: 'churn'; passes: number }
  | { op: 'info' }
  | { op: 'shutdown' };

/** Request operation names. */
export type AgentOp = AgentRequest['op'];

/** Messages sent by the host. */
export type HostMessage =
  | { t: 'hello'; nonce: string; version: number }
  | ({ t: 'req'; id: number } & AgentRequest);

/** Messages sent by the guest. */
export type GuestMessage =
  | { t: 'ready'; version: number }
  // No boot id here: reading it would make the kernel generate it, and a template would pass it to every clone.
  | { t: 'hello-ok'; nonce: string; version: number; session: number; agentPid: number; gt?: HelloTimes }
  | { t: 'res'; id: number; ok: true; result: unknown; gt?: ReplyTimes }
  | { t: 'res'; id: number; ok: false; error: { code: string; message: string }; gt?: ReplyTimes }
  | { t: 'out'; proc: number; fd: 1 | 2; data: string }
  | { t: 'exit'; proc: number; code: number | null; signal: string | null };

/** Most passes one `churn` request may ask for (one pass fills ~1.5 MiB of a TCG translation buffer, ~20 ms). */
export const CHURN_MAX_PASSES = 200;

const OPS: ReadonlySet<string> = new Set([
  'ping',
  'exec',
  'stdin',
  'close-stdin',
  'signal',
  'resize',
  'proc-status',
  'signal-cgroup',
  'update-cgroup',
  'cgroup-stats',
  'reseed',
  'set-time',
  'online',
  'mount-shared',
  'sync',
  'warm',
  'churn',
  'net',
  'info',
  'shutdown',
]);

/** No NUL (C strings) and no unit or record separator (the helper's field separators) in what reaches the helper. */
const isArg = (v: unknown): v is string => typeof v === 'string' && isHelperSafe(v);
const isArgs = (v: unknown): v is string[] => Array.isArray(v) && v.length <= 1024 && v.every(isArg);
/** An rlimit bound: a non-negative safe integer or null (unlimited). */
const isBound = (v: unknown): boolean => v === null || isUint(v);
/** A relative path inside the share that cannot climb out of it. */
const isShareRelative = (v: unknown): boolean =>
  isArg(v) && v !== '' && !v.startsWith('/') && v.split('/').every((p) => p !== '..');
const isContainerPath = (v: unknown): boolean =>
  isArg(v) && v.startsWith('/') && v.split('/').every((p) => p !== '..');

/** Linux's PATH_MAX: the longest path, with its terminating NUL, that execve(2) takes. */
const PATH_MAX = 4096;

/**
 * Validates the process fields of an exec, naming them under `at` in the error it returns (or null): the
 * agent's ExecRequest (`complete` false: env, cwd, uid and gid may be left to the agent's defaults) and the
 * control channel's ExecProcess (`complete`: every field, an absolute cwd and the supplementary groups).
 */
export function execProcessError(p: Obj, at: string, complete: boolean): string | null {
  if (!isStrings(p.args) || p.args.length === 0 || p.args[0] === '')
    return `${at}.args must be a non-empty string array`;
  // A program path of PATH_MAX bytes or more can never run (execve fails with ENAMETOOLONG), and the agent
  // quotes the program in its errors: a megabyte one made a reply larger than a frame (found by fuzzing).
  if (Buffer.byteLength(p.args[0]!) >= PATH_MAX)
    return `${at}.args[0] must be a program of at most ${PATH_MAX - 1} bytes (PATH_MAX)`;
  const given = (k: string) => complete || p[k] !== undefined;
  if (given('env') && !isStrings(p.env)) return `${at}.env must be a string array`;
  if (complete && !(typeof p.cwd === 'string' && p.cwd.startsWith('/')))
    return `${at}.cwd must be an absolute path`;
  if (given('cwd') && typeof p.cwd !== 'string') return `${at}.cwd must be a string`;
  for (const k of ['uid', 'gid'] as const)
    if (given(k) && !isUint(p[k])) return `${at}.${k} must be a non-negative integer`;
  if (complete && !(Array.isArray(p.additionalGids) && p.additionalGids.every(isUint)))
    return `${at}.additionalGids must be non-negative integers`;
  return null;
}

/** A container's cgroup leaf name: a container id (no path separators, not hidden). */
function isCgroupName(v: unknown): v is string {
  return typeof v === 'string' && /^[\w.+-]{1,200}$/.test(v) && !v.startsWith('.');
}

/** Why `limits` is not a set of cgroup limit files and values, or null. */
function cgroupLimitsError(limits: unknown, at: string): string | null {
  if (!isObj(limits)) return `${at} must be an object`;
  for (const [k, v] of Object.entries(limits)) {
    if (!isOneOf(CGROUP_LIMIT_FILES, k))
      return `${at}: ${shownValue(k)} is not one of ${CGROUP_LIMIT_FILES.join(', ')}`;
    if (typeof v !== 'string' || !/^[0-9a-z ]{1,40}$/.test(v)) return `${at}.${k} must be a cgroup value`;
  }
  return null;
}

/** Validates `exec.container`; returns the faulty field and what it must be, or null. */
export function containerError(c: unknown): string | null {
  if (!isObj(c)) return 'container must be an object';
  if (!isShareRelative(c.root)) return 'root must be a relative path inside the share, without ..';
  if (c.join !== undefined && (!isUint(c.join) || c.join === 0)) return 'join must be a guest pid';
  if (c.hostname !== undefined && !(isArg(c.hostname) && c.hostname.length <= 64))
    return 'hostname must be a string of at most 64 chars';
  for (const k of ['readonly', 'noNewPrivileges'] as const)
    if (c[k] !== undefined && typeof c[k] !== 'boolean') return `${k} must be a boolean`;
  // The helper sets at most 64 groups (`gid_t gl[64]` in vmc-helper.c): more would be dropped, not refused.
  if (
    c.additionalGids !== undefined &&
    !(Array.isArray(c.additionalGids) && c.additionalGids.length <= 64 && c.additionalGids.every(isUint))
  )
    return 'additionalGids must be an array of at most 64 non-negative integers';
  if (c.cgroup !== undefined) {
    const g = c.cgroup;
    if (!isObj(g) || !isCgroupName(g.name)) return 'cgroup.name must be a container id';
    if (g.limits !== undefined) {
      const err = cgroupLimitsError(g.limits, 'cgroup.limits');
      if (err) return err;
    }
  }
  const extra = containerExtrasError(c);
  if (extra) return extra;
  if (c.mounts === undefined) return null;
  if (!Array.isArray(c.mounts) || c.mounts.length > 128) return 'mounts must be an array of at most 128';
  for (const [i, m] of c.mounts.entries()) {
    if (!isObj(m)) return `mounts[${i}] must be an object`;
    if (!isOneOf(CONTAINER_MOUNT_TYPES, m.type))
      return `mounts[${i}].type must be one of ${CONTAINER_MOUNT_TYPES.join(', ')}`;
    if (m.type === 'bind' ? !isShareRelative(m.source) : !isArg(m.source))
      return `mounts[${i}].source must be ${m.type === 'bind' ? 'a relative path inside the share' : 'a string'}`;
    if (!isContainerPath(m.target)) return `mounts[${i}].target must be an absolute path without ..`;
    if (!isUint(m.flags)) return `mounts[${i}].flags must be a non-negative integer`;
    if (!isArg(m.data)) return `mounts[${i}].data must be a string`;
  }
  return null;
}

/** Validates the spec extras of `exec.container` (masked paths ... hooks); returns the faulty field, or null. */
function containerExtrasError(c: Obj): string | null {
  for (const k of ['maskedPaths', 'readonlyPaths'] as const) {
    const v = c[k];
    if (v !== undefined && !(Array.isArray(v) && v.length <= 256 && v.every(isContainerPath)))
      return `${k} must be at most 256 absolute paths without ..`;
  }
  if (c.sysctl !== undefined) {
    if (!isObj(c.sysctl) || Object.keys(c.sysctl).length > 256)
      return 'sysctl must be an object of at most 256';
    for (const [k, v] of Object.entries(c.sysctl))
      if (!/^[a-z0-9_]+(\.[a-zA-Z0-9_-]+)+$/.test(k) || !isArg(v) || v.includes('\n') || v.length > 4096)
        return `sysctl.${k.slice(0, 64)} must be a dotted name with a single-line value`;
  }
  if (c.propagation !== undefined && !isUint(c.propagation)) return 'propagation must be mount(2) flags';
  if (c.rlimits !== undefined) {
    if (!Array.isArray(c.rlimits) || c.rlimits.length > 16) return 'rlimits must be an array of at most 16';
    for (const [i, r] of c.rlimits.entries())
      if (!isObj(r) || !isUint(r.resource) || r.resource > 15 || !isBound(r.soft) || !isBound(r.hard))
        return `rlimits[${i}] must be {resource: 0-15, soft, hard: integer or null}`;
  }
  if (
    c.oomScoreAdj !== undefined &&
    !(Number.isInteger(c.oomScoreAdj) && Math.abs(c.oomScoreAdj as number) <= 1000)
  )
    return 'oomScoreAdj must be an integer from -1000 to 1000';
  if (c.shareNamespaces !== undefined) {
    const n = c.shareNamespaces;
    if (
      !isObj(n) ||
      !isUint(n.pid) ||
      n.pid === 0 ||
      !Array.isArray(n.kinds) ||
      !n.kinds.every((k) => isOneOf(SHAREABLE_NAMESPACES, k))
    )
      return `shareNamespaces must be {pid: a guest pid, kinds: some of ${SHAREABLE_NAMESPACES.join(', ')}}`;
  }
  if (c.startHooks !== undefined) {
    if (!Array.isArray(c.startHooks) || c.startHooks.length > 32)
      return 'startHooks must be an array of at most 32';
    for (const [i, h] of c.startHooks.entries())
      if (
        !isObj(h) ||
        !isContainerPath(h.path) ||
        !isArgs(h.args) ||
        !isArgs(h.env) ||
        !isUint(h.timeout) ||
        h.timeout === 0 ||
        h.timeout > 600
      )
        return `startHooks[${i}] must be {path: absolute, args, env: string arrays, timeout: 1-600 s}`;
  }
  if (c.hookState !== undefined && !(isArg(c.hookState) && c.hookState.length <= 64 * 1024))
    return 'hookState must be a JSON string';
  return null;
}

/** Result of validating a frame: the typed message, or an error naming the field at fault. */
export type Parsed<T> = { ok: true; msg: T } | { ok: false; error: string; id?: number };

/** Validates a frame received by the guest. */
export function parseHostMessage(v: unknown): Parsed<HostMessage> {
  if (!isObj(v)) return { ok: false, error: 'frame is not an object' };
  if (v.t === 'hello') {
    if (typeof v.nonce !== 'string' || v.nonce.length === 0 || v.nonce.length > 128)
      return { ok: false, error: 'hello.nonce must be a string of 1–128 chars' };
    if (!isUint(v.version)) return { ok: false, error: 'hello.version must be a non-negative integer' };
    return { ok: true, msg: { t: 'hello', nonce: v.nonce, version: v.version } };
  }
  if (v.t !== 'req') return { ok: false, error: `unknown frame type ${shownValue(v.t)}` };
  if (!isUint(v.id)) return { ok: false, error: 'req.id must be a non-negative integer' };
  const id = v.id;
  const bad = (error: string): Parsed<HostMessage> => ({ ok: false, error, id });
  if (typeof v.op !== 'string' || !OPS.has(v.op)) return bad(`unknown op ${shownValue(v.op)}`);
  switch (v.op) {
    case 'exec': {
      const e = v.exec;
      if (!isObj(e)) return bad('exec must be an object');
      const err = execProcessError(e, 'exec', false);
      if (err) return bad(err);
      if (e.stdin !== undefined && typeof e.stdin !== 'boolean') return bad('exec.stdin must be a boolean');
      if (e.container !== undefined) {
        const err = containerError(e.container);
        if (err) return bad(`exec.container.${err}`);
      }
      if (e.terminal !== undefined) {
        const err = windowSizeError(e.terminal, 'exec.terminal');
        if (err) return bad(err);
        if (e.container === undefined) return bad('exec.terminal needs exec.container (a container process)');
      }
      return { ok: true, msg: { t: 'req', id, op: 'exec', exec: e as unknown as ExecRequest } };
    }
    case 'stdin':
      if (!isUint(v.proc) || typeof v.data !== 'string')
        return bad('stdin needs proc (integer) and data (base64)');
      return { ok: true, msg: { t: 'req', id, op: 'stdin', proc: v.proc, data: v.data } };
    case 'close-stdin':
      if (!isUint(v.proc)) return bad('close-stdin needs proc (integer)');
      return { ok: true, msg: { t: 'req', id, op: 'close-stdin', proc: v.proc } };
    case 'signal':
      if (!isUint(v.proc) || typeof v.signal !== 'string')
        return bad('signal needs proc (integer) and signal (name)');
      return { ok: true, msg: { t: 'req', id, op: 'signal', proc: v.proc, signal: v.signal } };
    case 'resize': {
      const err = isUint(v.proc) ? windowSizeError(v, 'resize') : 'resize needs proc (integer)';
      if (err) return bad(err);
      return {
        ok: true,
        msg: {
          t: 'req',
          id,
          op: 'resize',
          proc: v.proc as number,
          rows: v.rows as number,
          cols: v.cols as number,
        },
      };
    }
    case 'proc-status':
      if (!isUint(v.proc)) return bad('proc-status needs proc (integer)');
      return { ok: true, msg: { t: 'req', id, op: 'proc-status', proc: v.proc } };
    case 'signal-cgroup':
      if (!isCgroupName(v.name) || typeof v.signal !== 'string')
        return bad('signal-cgroup needs name (a container id) and signal (name)');
      return { ok: true, msg: { t: 'req', id, op: 'signal-cgroup', name: v.name, signal: v.signal } };
    case 'update-cgroup': {
      if (!isCgroupName(v.name)) return bad('update-cgroup needs name (a container id)');
      const err = cgroupLimitsError(v.limits, 'update-cgroup.limits');
      if (err) return bad(err);
      const limits = v.limits as Record<string, string>;
      return { ok: true, msg: { t: 'req', id, op: 'update-cgroup', name: v.name, limits } };
    }
    case 'cgroup-stats':
      if (!isCgroupName(v.name)) return bad('cgroup-stats needs name (a container id)');
      return { ok: true, msg: { t: 'req', id, op: 'cgroup-stats', name: v.name } };
    case 'reseed':
      if (typeof v.data !== 'string' || !/^[0-9a-f]{2,1024}$/.test(v.data) || v.data.length % 2 !== 0)
        return bad('reseed.data must be 1–512 bytes of lowercase hex');
      return { ok: true, msg: { t: 'req', id, op: 'reseed', data: v.data } };
    case 'set-time':
      if (typeof v.epochNs !== 'string' || !/^[0-9]{1,20}$/.test(v.epochNs))
        return bad('set-time.epochNs must be a decimal string');
      return { ok: true, msg: { t: 'req', id, op: 'set-time', epochNs: v.epochNs } };
    case 'online':
      if (!isUint(v.cpus) || v.cpus > 1024 || typeof v.memory !== 'boolean')
        return bad('online needs cpus (the number to have online, 0-1024) and memory (boolean)');
      return { ok: true, msg: { t: 'req', id, op: 'online', cpus: v.cpus, memory: v.memory } };
    case 'net': {
      const n = v.nic;
      const ip = /^[0-9a-fA-F:.]+$/;
      const cidr = /^[0-9a-fA-F:.]+\/[0-9]{1,3}$/;
      if (!isObj(n) || typeof n.mac !== 'string' || !/^([0-9a-f]{2}:){5}[0-9a-f]{2}$/.test(n.mac))
        return bad('net.nic.mac must be a lowercase MAC address');
      if (!isUint(n.mtu) || n.mtu < 68 || n.mtu > 65535) return bad('net.nic.mtu must be 68-65535');
      if (
        !Array.isArray(n.addresses) ||
        n.addresses.length > NIC_MAX_ADDRESSES ||
        !n.addresses.every((a) => typeof a === 'string' && cidr.test(a))
      )
        return bad(`net.nic.addresses must be at most ${NIC_MAX_ADDRESSES} CIDR strings`);
      if (
        !Array.isArray(n.routes) ||
        n.routes.length > NIC_MAX_ROUTES ||
        !n.routes.every(
          (r) =>
            isObj(r) &&
            typeof r.dest === 'string' &&
            (r.dest === 'default' || cidr.test(r.dest)) &&
            (r.via === undefined || (typeof r.via === 'string' && ip.test(r.via))),
        )
      )
        return bad(`net.nic.routes must be at most ${NIC_MAX_ROUTES} of {dest: CIDR|default, via?: address}`);
      if (v.spare !== undefined && typeof v.spare !== 'boolean') return bad('net.spare must be a boolean');
      const nic = n as unknown as NicConfig;
      return {
        ok: true,
        msg: { t: 'req', id, op: 'net', nic, ...(v.spare === true ? { spare: true } : {}) },
      };
    }
    case 'warm':
      if (typeof v.share !== 'boolean') return bad('warm.share must be a boolean');
      return { ok: true, msg: { t: 'req', id, op: 'warm', share: v.share } };
    case 'churn':
      if (!isUint(v.passes) || v.passes < 1 || v.passes > CHURN_MAX_PASSES)
        return bad(`churn.passes must be an integer from 1 to ${CHURN_MAX_PASSES}`);
      return { ok: true, msg: { t: 'req', id, op: 'churn', passes: v.passes } };
    default:
      return {
        ok: true,
        msg: { t: 'req', id, op: v.op as 'ping' | 'mount-shared' | 'sync' | 'info' | 'shutdown' },
      };
  }
}

/** Validates a frame received by the host. */
export function parseGuestMessage(v: unknown): Parsed<GuestMessage> {
  if (!isObj(v)) return { ok: false, error: 'frame is not an object' };
  switch (v.t) {
    case 'ready':
      return isUint(v.version)
        ? { ok: true, msg: { t: 'ready', version: v.version } }
        : { ok: false, error: 'ready.version' };
    case 'hello-ok': {
      if (typeof v.nonce !== 'string' || !isUint(v.version) || !isUint(v.session) || !isUint(v.agentPid)) {
        return { ok: false, error: 'hello-ok is missing nonce, version, session or agentPid' };
      }
      const err = v.gt === undefined ? null : helloTimesError(v.gt);
      if (err) return { ok: false, error: err };
      return { ok: true, msg: v as unknown as GuestMessage };
    }
    case 'res': {
      if (!isUint(v.id) || typeof v.ok !== 'boolean') return { ok: false, error: 'res needs id and ok' };
      // From here the request is known: the client fails it with the error instead of letting it time out.
      const id = v.id;
      if (
        !v.ok &&
        !(isObj(v.error) && typeof v.error.code === 'string' && typeof v.error.message === 'string')
      ) {
        return { ok: false, error: 'res.error needs code and message', id };
      }
      const err = v.gt === undefined ? null : replyTimesError(v.gt);
      if (err) return { ok: false, error: err, id };
      return { ok: true, msg: v as unknown as GuestMessage };
    }
    case 'out':
      if (!isUint(v.proc) || (v.fd !== 1 && v.fd !== 2) || typeof v.data !== 'string')
        return { ok: false, error: 'out needs proc, fd 1|2, data' };
      return { ok: true, msg: v as unknown as GuestMessage };
    case 'exit':
      if (
        !isUint(v.proc) ||
        !(v.code === null || Number.isInteger(v.code)) ||
        !(v.signal === null || typeof v.signal === 'string')
      ) {
        return { ok: false, error: 'exit needs proc, code and signal' };
      }
      return { ok: true, msg: v as unknown as GuestMessage };
    default:
      return { ok: false, error: `unknown frame type ${shownValue(v.t)}` };
  }
}
