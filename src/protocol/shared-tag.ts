/**
 * 9p mount tag of the VM's shared directory: QEMU exports the share under it (hypervisor/qemu/cmdline.ts) and
 * the guest agent mounts it by it (guest/agent/ops.ts). A constant of its own, so the guest bundle gets it
 * without anything of the host's.
 */
export const SHARED_TAG = 'vmcache.shared';
