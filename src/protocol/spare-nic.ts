/**
 * The spare NIC: every VM boots with one virtio-net NIC whose backend is a tap of its own in the host's
 * namespace (down, unaddressed), so that a pod's first interface needs no PCIe hot-plug after the hand-off.
 * The guest finds it by this placeholder MAC (locally administered) and keeps its link down until a pod's
 * `net` request gives it the pod interface's MAC; a VM given to a container without a network namespace has
 * its backend deleted (QEMU closes the tap and the NIC's link stays down). Shared by the QEMU command line
 * (hypervisor/qemu/cmdline.ts) and the guest agent, so the guest bundle gets it without anything of the host's.
 */
export const SPARE_NIC_MAC = '02:76:6d:63:00:01';
