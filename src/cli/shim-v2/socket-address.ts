import { createHash } from 'node:crypto';
import { join } from 'node:path';

/** Where containerd 1.6's shims put their sockets (shim/util.go `socketRoot` + `s`), whatever its state dir. */
export const SHIM_SOCKET_DIR = '/run/containerd/s';

/**
 * The shim socket's address as containerd's runc v2 shim and Kata compute it (`shim.SocketAddress`):
 * `unix:///run/containerd/s/<sha256(<containerd address>/<namespace>/<group>)>`, where the group is the pod's
 * sandbox id (so a pod's containers find its daemon) or the task id. 82 bytes: within a socket path's 107.
 */
export function socketAddress(containerdAddress: string, namespace: string, group: string): string {
  const d = createHash('sha256')
    .update(join(containerdAddress, namespace, group))
    .digest('hex');
  return `unix://${join(SHIM_SOCKET_DIR, d)}`;
}

/** The path of a `unix://` address (containerd's `address` file, $TTRPC_ADDRESS), or the address if bare. */
export function socketPathOf(address: string): string {
  return address.startsWith('unix://') ? address.slice('unix://'.length) : address;
}

/** The CRI annotation naming a container's pod sandbox (runc's shim groups by it too). */
export const SANDBOX_ID_ANNOTATION = 'io.kubernetes.cri.sandbox-id';
