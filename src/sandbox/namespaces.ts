import { statSync } from 'node:fs';
import { VmcError } from '../errors.js';
import type { ContainerConfig } from '../oci/bundle.js';
import { NAMESPACE_KINDS } from '../oci/linux.js';
import type { SHAREABLE_NAMESPACES } from '../protocol/agent/messages.js';

/** A namespace a pod member shares with its sandbox's process in the guest. */
export type SharedNamespace = (typeof SHAREABLE_NAMESPACES)[number];

/** True when both paths name the same namespace (same device and inode). */
function sameNamespace(a: string, b: string): boolean {
  try {
    const x = statSync(a);
    const y = statSync(b);
    return x.dev === y.dev && x.ino === y.ino;
  } catch {
    return false;
  }
}

/**
 * What the bundle's namespace paths (other than the network one, which is brought into the VM) mean inside
 * the VM. A host namespace cannot be joined from inside a guest, so a path is refused, except in a pod: CRI
 * names the sandbox's namespaces (`/proc/<sandbox pid>/ns/ipc`, `uts`, and `pid` when the pod shares its
 * process namespace) for each member, and the member then shares the sandbox container's IPC, UTS, cgroup or
 * PID namespace in the guest. A mount namespace is always a container's own.
 * `sandboxPid`: the host pid of the sandbox's host-side process (the pid CRI's paths name), for a member.
 */
export function namespacesToShare(cfg: ContainerConfig, sandboxPid: number | null): SharedNamespace[] {
  const share: SharedNamespace[] = [];
  for (const n of cfg.linux.namespacePaths) {
    const ofSandbox =
      sandboxPid !== null && sameNamespace(n.path, `/proc/${sandboxPid}/ns/${NAMESPACE_KINDS[n.type]}`);
    if (ofSandbox && (n.type === 'ipc' || n.type === 'uts' || n.type === 'cgroup' || n.type === 'pid'))
      share.push(n.type);
    else
      throw new VmcError(
        'VMC_ERR_OCI_UNSUPPORTED',
        `${cfg.bundle}/config.json: ${n.at} ${n.path}: a host ${n.type} namespace cannot be joined from inside a VM${
          sandboxPid === null
            ? '; only a pod member may name its sandbox’s namespaces'
            : `; a pod member may name only its sandbox’s (pid ${sandboxPid}) ipc, uts, cgroup and pid namespaces, not a mount one`
        }`,
      );
  }
  return share;
}
