import { basename, resolve } from 'node:path';
import { VmcError } from '../errors.js';
import type { MountSpec } from '../oci/bundle.js';
import { preview } from '../oci/validate.js';
import { helperSafe } from '../platform/c-string.js';
import type { ContainerMount } from '../protocol/agent/messages.js';

/** mount(2) flags, as in <sys/mount.h>. */
const MS = {
  RDONLY: 1,
  NOSUID: 2,
  NODEV: 4,
  NOEXEC: 8,
  SYNCHRONOUS: 16,
  DIRSYNC: 128,
  NOATIME: 1024,
  NODIRATIME: 2048,
  BIND: 4096,
  REC: 16384,
  RELATIME: 1 << 21,
  STRICTATIME: 1 << 24,
} as const;

/** OCI mount options that are mount(2) flags (runc's table); `set: false` clears the flag. */
const FLAG_OPTIONS: Record<string, { flag: number; set: boolean }> = {
  ro: { flag: MS.RDONLY, set: true },
  rw: { flag: MS.RDONLY, set: false },
  nosuid: { flag: MS.NOSUID, set: true },
  suid: { flag: MS.NOSUID, set: false },
  nodev: { flag: MS.NODEV, set: true },
  dev: { flag: MS.NODEV, set: false },
  noexec: { flag: MS.NOEXEC, set: true },
  exec: { flag: MS.NOEXEC, set: false },
  sync: { flag: MS.SYNCHRONOUS, set: true },
  async: { flag: MS.SYNCHRONOUS, set: false },
  dirsync: { flag: MS.DIRSYNC, set: true },
  noatime: { flag: MS.NOATIME, set: true },
  atime: { flag: MS.NOATIME, set: false },
  nodiratime: { flag: MS.NODIRATIME, set: true },
  diratime: { flag: MS.NODIRATIME, set: false },
  relatime: { flag: MS.RELATIME, set: true },
  norelatime: { flag: MS.RELATIME, set: false },
  strictatime: { flag: MS.STRICTATIME, set: true },
  bind: { flag: MS.BIND, set: true },
  rbind: { flag: MS.BIND | MS.REC, set: true },
};

/** Propagation options: meaningless for a mount namespace of its own inside a VM, so dropped. */
const PROPAGATION = new Set([
  'private',
  'rprivate',
  'shared',
  'rshared',
  'slave',
  'rslave',
  'unbindable',
  'runbindable',
]);

/** File systems the guest makes itself for a container. */
const GUEST_TYPES = new Set(['proc', 'sysfs', 'tmpfs', 'devpts', 'mqueue']);

/** A host path the runtime bind-mounts into the VM's share so that the guest can bind it into the container. */
export interface HostBind {
  /** Host path (a file or a directory). */
  source: string;
  /** Where it goes, relative to the VM's shared directory. */
  shareRel: string;
}

/** How a bundle's mounts are made: on the host (into the share) and in the guest. */
export interface MountPlan {
  guest: ContainerMount[];
  host: HostBind[];
  /** Mounts left out, with the reason (logged at debug). */
  skipped: Array<{ destination: string; reason: string }>;
}

/** Splits OCI mount options into mount(2) flags and file-system data. */
export function mountFlags(options: readonly string[]): { flags: number; data: string } {
  let flags = 0;
  const data: string[] = [];
  for (const o of options) {
    const f = FLAG_OPTIONS[o];
    if (f) flags = f.set ? flags | f.flag : flags & ~f.flag;
    else if (!PROPAGATION.has(o)) data.push(o);
  }
  return { flags, data: data.join(',') };
}

/**
 * Plans a container's mounts (the subset a VM can honour, as Kata does):
 * - proc, sysfs, tmpfs, devpts and mqueue are made by the guest;
 * - a bind mount of a host path is bind-mounted by the host into the share (`<cid>/mounts/<n>/<name>`) and from there
 *   by the guest into the container;
 * - a bind-mounted `/dev/shm` becomes a guest tmpfs of the same size (host shared memory cannot cross the VM
 *   boundary; Kata does the same with `shmSize`);
 * - a cgroup file system is the guest's cgroup v2 hierarchy.
 * A bind source that does not exist, or another file-system type, is an error naming `mounts[i]`.
 */
export function planMounts(
  mounts: readonly MountSpec[],
  cid: string,
  shmSize: number,
  exists: (path: string) => boolean,
  file = 'config.json',
): MountPlan {
  const plan: MountPlan = { guest: [], host: [], skipped: [] };
  mounts.forEach((m, i) => {
    const { flags, data } = mountFlags(m.options);
    const isBind = m.type === 'bind' || (flags & MS.BIND) !== 0;
    if (m.destination === '/dev/shm' && isBind) {
      plan.guest.push({
        type: 'tmpfs',
        source: 'shm',
        target: '/dev/shm',
        flags: MS.NOSUID | MS.NODEV | MS.NOEXEC,
        data: `mode=1777,size=${shmSize}`,
      });
      return;
    }
    if (isBind) {
      if (!m.source || !exists(m.source)) {
        throw new VmcError(
          'VMC_ERR_OCI_INVALID',
          `${file}: mounts[${i}].source ${preview(m.source ?? '')} (bind mount on ${preview(m.destination)}) does not exist`,
        );
      }
      // The source's own name last (as Kata keeps it), so that the container's mountinfo shows a bind's root
      // as `.../<name>` like runc's, not as an index.
      const name = helperSafe(basename(resolve(m.source))) || 'root';
      const shareRel = `${cid}/mounts/${i}/${name}`;
      plan.host.push({ source: m.source, shareRel });
      plan.guest.push({
        type: 'bind',
        source: shareRel,
        target: m.destination,
        flags: flags & ~MS.BIND,
        data: '',
      });
      return;
    }
    const type = m.type ?? '';
    if (type === 'cgroup' || type === 'cgroup2') {
      // The guest's cgroup v2 hierarchy (the container's limits live in /vmcache/<id> there).
      plan.guest.push({ type: 'cgroup2', source: 'cgroup2', target: m.destination, flags, data: '' });
      return;
    }
    if (!GUEST_TYPES.has(type)) {
      throw new VmcError(
        'VMC_ERR_OCI_INVALID',
        `${file}: mounts[${i}].type ${preview(type)} on ${preview(m.destination)} is not supported in a VM (supported: bind, ${[...GUEST_TYPES].join(', ')}, cgroup)`,
      );
    }
    plan.guest.push({
      type: type as ContainerMount['type'],
      source: m.source ?? type,
      target: m.destination,
      flags,
      data,
    });
  });
  return plan;
}
