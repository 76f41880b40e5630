import { createHash } from 'node:crypto';

/** `vmt` and 8 hex digits of the VM id's hash: unique per VM, and within the kernel's 15-character limit. */
function tapPrefix(vmId: string): string {
  return `vmt${createHash('sha256').update(vmId).digest('hex').slice(0, 8)}`;
}

/** The tap of hot-plugged pod interface `i` of VM `vmId`. */
export function tapName(vmId: string, i: number): string {
  return `${tapPrefix(vmId)}${i}`;
}

/** The tap behind VM `vmId`'s spare NIC (protocol/spare-nic.ts), made by QEMU at start-up. */
export function spareTapName(vmId: string): string {
  return `${tapPrefix(vmId)}s`;
}
