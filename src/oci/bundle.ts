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
import { type EnvVar, parseEnv } from './env.js';
import { type Hooks, parseHooks } from './hooks.js';
import { type LinuxExtras, linuxExtras, type NamespaceKindOf, namespaceKindOf } from './linux.js';
import { At } from './validate.js';

/** A device the container asks for. */
export interface DeviceSpec {
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
  process: {
    args: string[];
    env: EnvVar[];
    cwd: string;
    uid: number;
    gid: number;
    additionalGids: number[];
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

function mounts(a: At): MountSpec[] {
  if (!a.exists()) return [];
  return a.array().map((m) => {
    const out: MountSpec = {
      destination: m.get('destination').absolutePath(),
      options: m.get('options').optional((o) => o.strings()) ?? [],
    };
    const source = m.get('source').optional((s) => s.string());
    if (source !== undefined) out.source = source;
    const type = m.get('type').optional((s) => s.string());
    if (type !== undefined) out.type = type;
    return out;
  });
}

/**
 * /dev/shm size: 64 MiB, or the size of the file system behind a bind-mounted /dev/shm (what Kata's
 * `oci.GetShmSize` does for CRI's sandbox shm).
 */
export function shmSize(ms: MountSpec[], statfs: StatFs): number {
  const shm = ms.find(
    (m) =>
      m.destination === '/dev/shm' &&
      (m.type === 'bind' || m.options.includes('bind') || m.options.includes('rbind')) &&
      m.source,
  );
  if (!shm) return DEFAULT_SHM_SIZE;
  const st = statfs(shm.source!);
  return st.bsize * st.blocks;
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
  const spec = new At(json, '', file);
  spec.object();
  spec.get('ociVersion').nonEmptyString();
  const root = spec.get('root');
  root.object();
  const rootPath = root.get('path').nonEmptyString();
  const rootfs = isAbsolute(rootPath) ? rootPath : join(bundle, rootPath);
  if (!existsSync(rootfs) || !statSync(rootfs).isDirectory())
    throw new VmcError('VMC_ERR_OCI_BUNDLE', `${file}: root.path ${rootfs} is not a directory`);
  const p = spec.get('process');
  p.object();
  const args = p.get('args').strings();
  if (args.length === 0 || args[0] === '')
    p.get('args').fail('a non-empty array whose first element names the program');
  const user = p.get('user');
  user.object();
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
      args,
      env: parseEnv(p.get('env').optional((e) => e.strings()) ?? [], file),
      cwd: p.get('cwd').absolutePath(),
      uid: user.get('uid').uint(),
      gid: user.get('gid').uint(),
      additionalGids: user.get('additionalGids').optional((g) => g.array().map((x) => x.uint())) ?? [],
      terminal: p.get('terminal').optional((t) => t.bool()) ?? false,
      noNewPrivileges: p.get('noNewPrivileges').optional((t) => t.bool()) ?? false,
    },
    hooks: parseHooks(spec.get('hooks')),
    linux: extras,
    mounts: ms,
    devices: linux.exists() ? devices(linux.get('devices')) : [],
    shmSize: shmSize(ms, statfs),
    resources: {},
    containerType: containerType(annotations, file),
    assets: assetAnnotations(annotations, file),
    annotations,
    spec: json,
  };
  const caps = parseCapabilities(p.get('capabilities'));
  if (caps) out.process.capabilities = caps;
  const res = linux.exists() ? linux.get('resources') : null;
  if (res?.exists()) {
    const mem = res.get('memory');
    const limit = mem.exists() ? mem.get('limit').optional((l) => l.int()) : undefined;
    // -1 (and 0) mean "no limit" in the runtime spec.
    if (limit !== undefined && limit > 0) {
      if (limit < 4 * 1024 * 1024) mem.get('limit').fail('at least 4 MiB, or -1 for none');
      out.resources.memoryLimit = limit;
    }
    const cpu = res.get('cpu');
    const quota = cpu.exists() ? cpu.get('quota').optional((q) => q.int()) : undefined;
    if (quota !== undefined && quota > 0) out.resources.cpuQuota = quota;
    const period = cpu.exists() ? cpu.get('period').optional((q) => q.uint()) : undefined;
    if (period !== undefined && period > 0) out.resources.cpuPeriod = period;
    const pids = res.get('pids');
    const plimit = pids.exists() ? pids.get('limit').optional((l) => l.int()) : undefined;
    if (plimit !== undefined && plimit > 0) out.resources.pidsLimit = plimit;
  }
  if (netns !== undefined) out.netns = netns;
  // The NIS domain name is the UTS namespace's kernel.domainname: set as that sysctl.
  const domain = spec.get('domainname').optional((d) => d.string());
  if (domain) {
    if (domain.length > 64 || !/^[\w.-]+$/.test(domain))
      spec.get('domainname').fail('a domain name of at most 64 characters');
    out.linux.sysctl['kernel.domainname'] = domain;
  }
  const hostname = spec.get('hostname').optional((h) => h.string());
  if (hostname !== undefined) out.hostname = hostname;
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
