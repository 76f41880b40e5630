import { existsSync, readFileSync, statSync } from 'node:fs';
import { isAbsolute, join, resolve } from 'node:path';
import { VmcError } from '../errors.js';
import {
  type AssetOverrides,
  assetAnnotations,
  type ContainerType,
  containerType,
  sandboxId,
} from './annotations.js';
import { type Capabilities, parseCapabilities } from './capabilities.js';
import { type Hooks, parseHooks } from './hooks.js';
import {
  type LinuxExtras,
  linuxExtras,
  MAX_SYSCTLS,
  type NamespaceKindOf,
  namespaceKindOf,
} from './linux.js';
import { type ProcessSpec, parseProcess } from './process.js';
import { At, checkDepth, preview } from './validate.js';

/** A device the container asks for. */
interface DeviceSpec {
  path: string;
  type: 'c' | 'b' | 'u' | 'p';
  major?: number;
  minor?: number;
  fileMode?: number;
  uid?: number;
  gid?: number;
}

/** A mount the container asks for. */
export interface MountSpec {
  destination: string;
  source?: string;
  type?: string;
  options: string[];
}

/** A bundle's container, validated: what the runtime needs to run it in a VM. */
export interface ContainerConfig {
  bundle: string;
  rootfs: string;
  rootfsReadonly: boolean;
  process: ProcessSpec & {
    terminal: boolean;
    capabilities?: Capabilities;
    noNewPrivileges: boolean;
  };
  /** `hooks`, run on the host or in the guest (see sandbox/hooks.ts). */
  hooks: Hooks;
  /** Masked and read-only paths, sysctls, root propagation, rlimits, OOM score, namespace paths. */
  linux: Omit<LinuxExtras, 'netns'>;
  hostname?: string;
  mounts: MountSpec[];
  devices: DeviceSpec[];
  /** `linux.resources` vmcache applies in the guest (cgroup v2) and sizes the VM by. */
  resources: { memoryLimit?: number; cpuQuota?: number; cpuPeriod?: number; pidsLimit?: number };
  /** The network namespace to join (`linux.namespaces[type=network].path`), e.g. one CNI made for a pod. */
  netns?: string;
  /** Bytes of the container's /dev/shm. */
  shmSize: number;
  containerType: ContainerType;
  sandboxId?: string;
  assets: AssetOverrides;
  annotations: Record<string, string>;
  /** The config.json as read, so that state can be rebuilt from it. */
  spec: unknown;
}

/** /dev/shm size when the bundle does not bind-mount one (Kata's default). */
export const DEFAULT_SHM_SIZE = 64 * 1024 * 1024;

/** Size of a file system, injected for tests (production: `statfsSync`). */
export type StatFs = (path: string) => { bsize: number; blocks: number };

/** Mounts the guest helper takes (`char *mounts[128]` in vmc-helper.c). */
export const MAX_MOUNTS = 128;

/** The smallest memory limit (bytes) a container may get: below it the guest kernel would kill it at once. */
export const MIN_MEMORY_LIMIT = 4 * 1024 * 1024;
/**
 * cgroup v2 `cpu.max` bounds, in µs: the kernel refuses a quota under 1 ms or over its max_cfs_runtime
 * (MAX_BW = 2^44-1 µs, "more than 203 days"), and a period outside 1 ms..1 s (kernel/sched/core.c).
 */
export const CPU_QUOTA_RANGE = [1000, 2 ** 44 - 1] as const;
export const CPU_PERIOD_RANGE = [1000, 1_000_000] as const;

/** The highest `pids.max` the kernel takes: PID_MAX_LIMIT on 64-bit (kernel/cgroup/pids.c refuses more). */
export const MAX_PIDS_LIMIT = 4 * 1024 * 1024;

function devices(a: At): DeviceSpec[] {
  if (!a.exists()) return [];
  return a.array().map((d) => {
    const type = d.get('type').string();
    if (!['c', 'b', 'u', 'p'].includes(type)) d.get('type').fail('one of c, b, u, p');
    const dev: DeviceSpec = { path: d.get('path').absolutePath(), type: type as DeviceSpec['type'] };
    if (type !== 'p') {
      dev.major = d.get('major').int();
      dev.minor = d.get('minor').int();
    }
    const mode = d.get('fileMode').optional((m) => m.uint(0o7777));
    if (mode !== undefined) dev.fileMode = mode;
    const uid = d.get('uid').optional((m) => m.uint());
    if (uid !== undefined) dev.uid = uid;
    const gid = d.get('gid').optional((m) => m.uint());
    if (gid !== undefined) dev.gid = gid;
    return dev;
  });
}

/**
 * `mounts`. The guest helper gets each non-bind mount as one argument of separated fields (type, source,
 * destination, data from the options), so those may hold neither NUL nor its separators. A bind's source is a
 * host path, bound into the VM's share under a safe name: only NUL is refused there.
 */
function mounts(a: At): MountSpec[] {
  if (!a.exists()) return [];
  return a.arrayOf(MAX_MOUNTS, 'mounts', "the guest helper's limit").map((m) => {
    m.object();
    const out: MountSpec = {
      destination: m.get('destination').containerPath(),
      options: m.get('options').optional((o) => o.array().map((x) => x.helperString())) ?? [],
    };
    const type = m.get('type').optional((s) => s.string());
    if (type !== undefined) out.type = type;
    const bind = type === 'bind' || out.options.includes('bind') || out.options.includes('rbind');
    const source = m.get('source').optional((s) => (bind ? s.cString('a path') : s.helperString()));
    if (source !== undefined) out.source = source;
    return out;
  });
}

/**
 * /dev/shm size: 64 MiB, or the size of the file system behind a bind-mounted /dev/shm (what Kata's
 * `oci.GetShmSize` does for CRI's sandbox shm).
 */
export function shmSize(ms: MountSpec[], statfs: StatFs, file = 'config.json'): number {
  const i = ms.findIndex(
    (m) =>
      m.destination === '/dev/shm' &&
      (m.type === 'bind' || m.options.includes('bind') || m.options.includes('rbind')),
  );
  if (i < 0) return DEFAULT_SHM_SIZE;
  const source = ms[i]!.source;
  const at: At = new At(source, `mounts[${i}].source`, file);
  if (source === undefined || !isAbsolute(source))
    at.fail('an absolute path (the host /dev/shm whose size the bind-mounted /dev/shm gets)');
  let st: ReturnType<StatFs>;
  try {
    st = statfs(source);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    const why =
      code === 'ENOENT' || code === 'ENOTDIR'
        ? 'does not exist'
        : `cannot be sized (${(e as Error).message})`;
    throw new VmcError(
      'VMC_ERR_OCI_INVALID',
      `${file}: mounts[${i}].source ${preview(source)} (bind mount on /dev/shm) ${why}`,
      { cause: e },
    );
  }
  return st.bsize * st.blocks;
}

/**
 * `linux.resources` vmcache applies as cgroup v2 files in the guest, refused here when the kernel would refuse
 * them there (at `start`). -1 and 0 mean "no limit" (or the default period) in the runtime spec.
 */
function resources(res: At): ContainerConfig['resources'] {
  const out: ContainerConfig['resources'] = {};
  const mem = res.get('memory');
  const limit = mem.exists() ? mem.get('limit').optional((l) => l.int()) : undefined;
  if (limit !== undefined && limit > 0) {
    if (limit < MIN_MEMORY_LIMIT) mem.get('limit').fail('at least 4 MiB, or -1 for none');
    out.memoryLimit = limit;
  }
  const cpu = res.get('cpu');
  const q = cpu.get('quota');
  const quota = cpu.exists() ? q.optional((x) => x.int()) : undefined;
  if (quota !== undefined && quota > 0) {
    const [lo, hi] = CPU_QUOTA_RANGE;
    if (quota < lo || quota > hi)
      q.fail(`from ${lo} to ${hi} (µs, what cgroup v2 cpu.max takes), or -1 for none`);
    out.cpuQuota = quota;
  }
  const pe = cpu.get('period');
  const period = cpu.exists() ? pe.optional((x) => x.uint()) : undefined;
  if (period !== undefined && period > 0) {
    const [lo, hi] = CPU_PERIOD_RANGE;
    if (period < lo || period > hi)
      pe.fail(`from ${lo} to ${hi} (µs, what cgroup v2 cpu.max takes), or 0 for the default`);
    out.cpuPeriod = period;
  }
  const pids = res.get('pids');
  const plimit = pids.exists() ? pids.get('limit').optional((l) => l.int()) : undefined;
  if (plimit !== undefined && plimit > 0) {
    if (plimit > MAX_PIDS_LIMIT)
      pids.get('limit').fail(`at most ${MAX_PIDS_LIMIT} (the kernel's PID_MAX_LIMIT), or -1 for none`);
    out.pidsLimit = plimit;
  }
  return out;
}

/**
 * Reads and validates `<bundle>/config.json` (the subset vmcache honours; unknown properties are ignored, as
 * the runtime spec requires; invalid or unsupported values are rejected with an error naming the JSON path).
 */
export function readBundle(
  bundleDir: string,
  statfs: StatFs,
  kindOf: NamespaceKindOf = namespaceKindOf,
): ContainerConfig {
  const bundle = resolve(bundleDir);
  if (!existsSync(bundle) || !statSync(bundle).isDirectory())
    throw new VmcError('VMC_ERR_OCI_BUNDLE', `bundle ${bundle} is not a directory`);
  const file = join(bundle, 'config.json');
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    throw new VmcError('VMC_ERR_OCI_BUNDLE', `bundle ${bundle} has no readable config.json`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new VmcError('VMC_ERR_OCI_INVALID', `${file}: not valid JSON (${(e as Error).message})`);
  }
  // Before anything walks the document (recursively, or to write it back as JSON).
  checkDepth(json, file);
  const spec = new At(json, '', file);
  spec.object();
  spec.get('ociVersion').nonEmptyString();
  const root = spec.get('root');
  root.object();
  const rootPath = root.get('path').nonEmptyString();
  const rootfs = isAbsolute(rootPath) ? rootPath : join(bundle, rootPath);
  if (!existsSync(rootfs) || !statSync(rootfs).isDirectory()) {
    // Shown whole when it is a plausible path; root.path can be any length (a megabyte one was echoed whole).
    const shown = rootfs.length > 4096 ? `${rootfs.slice(0, 200)}… (${rootfs.length} characters)` : rootfs;
    throw new VmcError('VMC_ERR_OCI_BUNDLE', `${file}: root.path ${shown} is not a directory`);
  }
  const p = spec.get('process');
  p.object();
  const proc = parseProcess(p, file);
  const annotations = spec.get('annotations').optional((a) => a.stringMap()) ?? {};
  const ms = mounts(spec.get('mounts'));
  const linux = spec.get('linux');
  if (linux.exists()) linux.object();
  const { netns, ...extras } = linuxExtras(spec, p, kindOf);
  const out: ContainerConfig = {
    bundle,
    rootfs,
    rootfsReadonly: root.get('readonly').optional((r) => r.bool()) ?? false,
    process: {
      ...proc,
      terminal: p.get('terminal').optional((t) => t.bool()) ?? false,
      noNewPrivileges: p.get('noNewPrivileges').optional((t) => t.bool()) ?? false,
    },
    hooks: parseHooks(spec.get('hooks')),
    linux: extras,
    mounts: ms,
    devices: linux.exists() ? devices(linux.get('devices')) : [],
    shmSize: shmSize(ms, statfs, file),
    resources: {},
    containerType: containerType(annotations, file),
    assets: assetAnnotations(annotations, file),
    annotations,
    spec: json,
  };
  const caps = parseCapabilities(p.get('capabilities'));
  if (caps) out.process.capabilities = caps;
  const res = linux.exists() ? linux.get('resources') : null;
  if (res?.exists()) out.resources = resources(res);
  if (netns !== undefined) out.netns = netns;
  // The NIS domain name is the UTS namespace's kernel.domainname: set as that sysctl.
  const domain = spec.get('domainname').optional((d) => d.string());
  if (domain) {
    if (domain.length > 64 || !/^[\w.-]+$/.test(domain))
      spec.get('domainname').fail('a domain name of at most 64 characters');
    out.linux.sysctl['kernel.domainname'] = domain;
    const n = Object.keys(out.linux.sysctl).length;
    if (n > MAX_SYSCTLS)
      linux
        .get('sysctl')
        .fail(`at most ${MAX_SYSCTLS - 1} sysctls when domainname is given (one more)`, `${n - 1}`);
  }
  // What sethostname(2) and the agent take (at most 64 bytes), and a host name: no controls, no spaces.
  const hostname = spec.get('hostname').optional((h) => h.string());
  if (hostname !== undefined) {
    if (!/^[A-Za-z0-9_.-]{0,64}$/.test(hostname))
      spec.get('hostname').fail('a host name of at most 64 letters, digits, "-", "." or "_"');
    out.hostname = hostname;
  }
  const sid = sandboxId(annotations);
  if (sid !== undefined) out.sandboxId = sid;
  if (out.containerType === 'container' && !sid) {
    throw new VmcError(
      'VMC_ERR_OCI_INVALID',
      `${file}: a container (not a sandbox) needs a sandbox id annotation (io.kubernetes.cri.sandbox-id, io.kubernetes.cri-o.SandboxID or io.kubernetes.sandbox.id)`,
    );
  }
  return out;
}
